"""What the Streamlit pages share, one module per idea:

- ``navigation``: the page list (light, for ``app.py``);
- ``session``: the session's keys, their defaults, and per-session caches;
- ``visitor``: who is visiting (the operator's settings, the workspace user, run secrets);
- ``models``: the loaded encoder, cached for the server;
- ``feedback``: errors and what to do first, shown the same way on every page;
- ``markup``: user strings (file names, words, labels) shown as text, never as Markdown;
- ``jobpanel``: background jobs (threads, queued runs) and their panels;
- ``matrices``: this session's matrices, the matrix chooser and the neighbour index;
- ``datastats``: the data's label statistics; ``colours``: map colours; ``plots``: figures;
- ``widgets``: widgets made from config fields, and values kept across pages.

Only this package, ``app.py`` and ``pages/`` import streamlit.
"""
