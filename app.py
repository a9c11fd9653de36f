"""Entry point: ``python app.py`` serves; ``app`` is the WSGI app for flask and gunicorn."""

import sys

from ringsum import create_app
from ringsum.cli import main

if __name__ == "__main__":
    sys.exit(main())

app = create_app()
