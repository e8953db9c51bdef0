"""``/docs``, ``/redoc`` and ``/openapi.json``, served only when ``docs_enabled`` (settings).

FastAPI's own documentation routes are fixed when the app is built, at import, before any
setting is read (settings are loaded in each worker's lifespan); these check the setting per
request and are otherwise an unknown path (404).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from api.deps import RuntimeDep

OPENAPI_PATH = "/openapi.json"


def _enabled(runtime: RuntimeDep) -> None:
    if not runtime.settings.docs_enabled:
        raise HTTPException(404)


router = APIRouter(include_in_schema=False, dependencies=[Depends(_enabled)])


@router.get(OPENAPI_PATH)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=OPENAPI_PATH, title=f"{request.app.title} - docs")


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url=OPENAPI_PATH, title=f"{request.app.title} - ReDoc")
