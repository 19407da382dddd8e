"""The gateway's HTTP API (FastAPI) and web page: a second adapter over the same kpt_gateway.api handlers."""
