"""The official `kaggle` package, behind the `[kaggle]` extra: an authenticated client, or one line
saying what is missing."""
from __future__ import annotations

import contextlib
import io

from src.errors import UserError
from src.extras import require

CREDENTIALS = ("no Kaggle credentials: set KAGGLE_API_TOKEN to a token from https://www.kaggle.com/settings/api, "
               "or save it to ~/.kaggle/access_token (or a kaggle.json with username and key in ~/.kaggle/)")


def client():
    """An authenticated `kaggle.api.kaggle_api_extended.KaggleApi`."""
    require("kaggle", "the Kaggle commands", "kaggle")
    with contextlib.redirect_stdout(io.StringIO()):  # importing kaggle tries to log in and prints its help
        from kaggle.api.kaggle_api_extended import KaggleApi
        api = KaggleApi()
        try:
            api.authenticate()
        except SystemExit:
            raise UserError(CREDENTIALS) from None
    return api
