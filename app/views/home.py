"""The app's root URL: Streamlit serves its default page at `/` and nowhere else, so the root is this hidden
page, which sends the browser on to the Runs page at its own stable URL (`/runs`)."""

import streamlit as st

st.switch_page("views/runs.py")
