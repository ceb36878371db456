"""The app's pages and how a page knows it runs through the app (light: no torch, no helpers).

``app.py`` imports this before anything heavy, so the sidebar does not wait for torch.
"""

import contextvars

# The app's pages after the start page: (script, title, icon, label on the start page).
PAGES = [
    ("pages/1_Model.py", "Model", ":material/neurology:", "1 · Model"),
    ("pages/2_Data.py", "Data", ":material/table:", "2 · Data"),
    ("pages/3_Train.py", "Train", ":material/model_training:", "3 · Train"),
    ("pages/4_Matrix.py", "Matrix", ":material/grid_on:", "4 · Matrix"),
    ("pages/5_Explore.py", "Explore", ":material/travel_explore:", "5 · Explore"),
    ("pages/6_Evaluate.py", "Evaluate", ":material/fact_check:", "6 · Evaluate"),
    ("pages/7_Export.py", "Export", ":material/download:", "7 · Export"),
    ("pages/8_Library.py", "Library", ":material/library_books:", "8 · Library"),
]

# True while app.py runs a page through st.navigation; a page run without it was started by
# Streamlit's old pages/ folder mode (see session.init_state).
via_app: contextvars.ContextVar[bool] = contextvars.ContextVar("embedgen_via_app", default=False)
