# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine worker (`server`, run with `python -m stylepass_core.worker`: the ASGI `app` over the job
`board`, served by uvicorn), its wire format (`protocol`), the client Blender uses (`client`, requests +
numpy only) and the local process manager (`manager`).

Nothing is imported here: the worker's Python may lack `requests`, and Blender's side must not load the
server. Import the submodule you need.
"""
