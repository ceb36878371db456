"""What the Streamlit pages share: session keys, cached loaders, background jobs, error display.

Only this package, ``app.py`` and ``pages/`` import streamlit.
"""
