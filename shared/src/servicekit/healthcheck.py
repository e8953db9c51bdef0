"""The container's HEALTHCHECK: ``python3 -m servicekit.healthcheck``.

Asks the service's own liveness endpoint (``PORT``, ``HEALTH_PATH``; defaults 8000 and
``/health``) with the interpreter the image already has, so images need no curl. Exit 0 when it
answers 2xx, 1 otherwise, as Docker and ECS container health checks expect.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("PORT", "8000")
    path = os.environ.get("HEALTH_PATH", "/health")
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            status = int(response.status)
    except (OSError, urllib.error.URLError) as error:
        print(f"unhealthy: {url}: {error}", file=sys.stderr)
        return 1
    return 0 if 200 <= status < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
