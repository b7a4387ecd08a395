"""Sign-language recognition in the browser: live webcam, upload, gallery, your own signs, model, results.

Usage (from the repository root, after `dvc repro`):
    streamlit run app/streamlit_app.py
    SIGNLANG_ROOT=/data/run1 streamlit run app/streamlit_app.py     # models/reports from another folder

A thin entry: it only sets up the page and the navigation; each page lives in
`app/views/`, and all model work is `stages.lib`'s.
"""
import sys
from pathlib import Path

# `streamlit run app/streamlit_app.py` puts only app/ on sys.path, but the app imports the
# pipeline's library as `stages.lib` and its own modules as `app.*`: both need the repository root.
REPOSITORY_ROOT = str(Path(__file__).resolve().parents[1])
if REPOSITORY_ROOT not in sys.path:
    sys.path.insert(0, REPOSITORY_ROOT)

import streamlit as st  # noqa: E402  (after the sys.path line above)

# streamlit-webrtc's native libraries (aiortc: pylibsrtp, av) must load before TensorFlow,
# which the pages pull in through stages.lib: the other order crashes with a segfault.
import streamlit_webrtc  # noqa: E402,F401

from app.views import gallery, live, model, record, results, train, upload  # noqa: E402


def main() -> None:
    st.set_page_config(page_title="Sign recognizer", page_icon=":material/sign_language:", layout="wide")
    pages = [
        st.Page(live.render, title="Live", icon=":material/videocam:", default=True),   # at the root URL
        st.Page(upload.render, title="Upload", icon=":material/upload:", url_path="upload"),
        st.Page(gallery.render, title="Gallery", icon=":material/photo_library:", url_path="gallery"),
        st.Page(record.render, title="Record", icon=":material/radio_button_checked:", url_path="record"),
        st.Page(train.render, title="Train", icon=":material/rocket_launch:", url_path="train"),
        st.Page(model.render, title="Model", icon=":material/model_training:", url_path="model"),
        st.Page(results.render, title="Results", icon=":material/analytics:", url_path="results"),
    ]
    st.navigation(pages).run()


main()
