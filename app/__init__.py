"""The Streamlit app: a thin consumer of `stages.lib` (no model code, no preprocessing of its own).

Usage:
    streamlit run app/streamlit_app.py        # from the repository root, after `dvc repro`

Modules: `settings` (paths, params, WebRTC configuration), `state` (the shared
model and the chosen one), `recognition` (clips through the model),
`live_session` (the webcam path's thread-safe state), `reports` (readers for
reports/ and the DVC experiment table), `views/*` (one module per page).
"""
