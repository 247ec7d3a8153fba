"""saelab's web app. Started by `saelab app`, which runs
`streamlit run app/main.py -- --workspace DIR`; pages only read the workspace's results store, except a latent's
label and note saved from its feature page.

Every page has a stable URL (`/runs`, `/features`, ...). Streamlit serves its default page at the root URL only,
so the default is a hidden page that switches to Runs: `/` and `/runs` both land there.
"""

import streamlit as st

st.set_page_config(page_title="saelab", page_icon=":material/hub:", layout="wide")

PAGES = [
    st.Page("views/home.py", title="saelab", url_path="home", default=True, visibility="hidden"),
    st.Page("views/runs.py", title="Runs", icon=":material/monitoring:", url_path="runs"),
    st.Page("views/overview.py", title="SAE overview", icon=":material/bar_chart:", url_path="overview"),
    st.Page("views/features.py", title="Features", icon=":material/neurology:", url_path="features"),
    st.Page("views/prompts.py", title="Prompt explorer", icon=":material/edit_note:", url_path="prompts"),
    st.Page("views/circuits.py", title="Circuits", icon=":material/account_tree:", url_path="circuits"),
    st.Page("views/feature_graphs.py", title="Feature graphs", icon=":material/schema:", url_path="feature_graphs"),
    st.Page("views/evaluations.py", title="Evaluations", icon=":material/table_chart:", url_path="evaluations"),
]

st.navigation(PAGES).run()
