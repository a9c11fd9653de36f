"""ringsum's version: the one place it is written.

pyproject.toml reads it (``[tool.setuptools.dynamic] version``), so an installed
ringsum's package metadata says the same; ``python app.py --version``, ``GET /healthz``
and ``ringsum_build_info`` say it too, and a test holds the CHANGELOG's newest entry and
the OpenAPI document's ``info.version`` to it. Read here rather than from the installed
metadata at run time: ``python app.py`` in a checkout runs a ringsum that is not
installed, or not the one installed.
"""

__version__ = "0.3.0"
