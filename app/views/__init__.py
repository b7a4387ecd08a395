"""The app's pages, one module each, each with a `render()` that draws the page.

Usage:
    from app.views import live, upload, gallery, record, train, model, results
    st.navigation([st.Page(live.render, title="Live"), ...]).run()

(Named `views`, not `pages`: Streamlit treats a `pages/` folder beside the
entry script as pages of its own.)
"""
