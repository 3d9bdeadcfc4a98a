"""Folders on the Hugging Face Hub: a hub repo id resolved to a local snapshot (:func:`resolve_folder`), and a folder
uploaded to a repo (:func:`upload_folder`). Both go through huggingface_hub (its cache, its token, its offline mode);
nothing here knows what the folder holds.

Offline mode: ``HF_HUB_OFFLINE=1`` (huggingface_hub reads it once, at import; it is read again here at each call, so
setting it later in a session counts too) or ``local_files_only=True``: a repo id then resolves from the local
cache only, and a repo not in it is an error that names it, without any network call.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

log = logging.getLogger(__name__)


def offline() -> bool:
    """Whether huggingface_hub is in offline mode, or ``HF_HUB_OFFLINE`` is set now."""
    now = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    return bool(constants.HF_HUB_OFFLINE) or now


def is_repo_id(text: str) -> bool:
    """Whether ``text`` could name a hub repo (``name`` or ``owner/name``; not ``./x``, ``/abs/x`` or ``a/b/c``)."""
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return not text.startswith((".", "~"))


def resolve_folder(path: str | os.PathLike, *, revision: str | None = None, cache_dir: str | os.PathLike | None = None,
                   local_files_only: bool = False, token: str | bool | None = None) -> Path:
    """``path`` when it exists; else ``path`` read as a hub model repo id, downloaded (or found in the cache) by
    ``huggingface_hub.snapshot_download`` and returned as its snapshot folder.

    Args:
        path: a local folder, or a hub repo id (``owner/name``).
        revision: branch, tag or commit of the repo (default: main).
        cache_dir: the hub cache (default: huggingface_hub's, ``HF_HUB_CACHE``).
        local_files_only: never reach the network: the repo must be in the cache (as under ``HF_HUB_OFFLINE=1``).
        token: hub token for a private or gated repo (default: the one ``hf auth login`` saved).

    A path that is neither raises ``FileNotFoundError`` saying which, and why the repo was not found.
    """
    name = os.fspath(path)
    if Path(name).exists():
        return Path(name)
    if not is_repo_id(name):
        raise FileNotFoundError(f"{name}: no such folder (nor a hub repo id, owner/name)")
    no_network = local_files_only or offline()
    where = f"hub repo {name!r}" + (f" (revision {revision!r})" if revision else "")
    try:
        return Path(snapshot_download(name, revision=revision, cache_dir=cache_dir, local_files_only=no_network,
                                      token=token))
    except GatedRepoError as e:
        raise FileNotFoundError(f"{name}: no such folder, and {where} is gated: accept its terms on the hub and log "
                                "in (hf auth login) or pass a token") from e
    except RepositoryNotFoundError as e:
        raise FileNotFoundError(f"{name}: no such folder, and no {where} on the hub (or it is private: log in with "
                                "hf auth login, or pass a token)") from e
    except RevisionNotFoundError as e:
        raise FileNotFoundError(f"{name}: no such folder, and {where} has no such revision") from e
    except LocalEntryNotFoundError as e:
        cache = cache_dir or constants.HF_HUB_CACHE
        if no_network:
            why = "local_files_only=True" if local_files_only else "HF_HUB_OFFLINE is set"
            raise FileNotFoundError(f"{name}: no such folder, and {where} is not in the hub cache {cache}; offline "
                                    f"({why}), nothing was downloaded: download it once with network access, or "
                                    "give a folder") from e
        raise FileNotFoundError(f"{name}: no such folder, and {where} could not be downloaded nor found in the hub "
                                f"cache {cache} ({str(e).splitlines()[0]})") from e


def remote_file(api: HfApi, repo_id: str, filename: str, revision: str | None) -> str | None:
    """The text of ``filename`` in a hub repo, or None when the repo or revision lacks it."""
    try:
        if not api.file_exists(repo_id, filename, revision=revision):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            return Path(api.hf_hub_download(repo_id, filename, revision=revision, local_dir=tmp)).read_text()
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return None


def upload_folder(folder: Path, repo_id: str, *, replaced: Iterable[str] = (), card: str | None = None,
                  card_is_ours: Callable[[str], bool] | None = None, commit_message: str = "Upload with wm-video",
                  private: bool | None = None, token: str | bool | None = None, revision: str | None = None,
                  create_pr: bool = False) -> str:
    """Upload ``folder``'s files to the hub model repo ``repo_id`` (created if absent) in one commit; returns the
    commit's URL.

    Args:
        folder: what to upload.
        repo_id: ``owner/name``.
        replaced: sub-folders the upload owns: files under them that this upload lacks are deleted in the same
            commit (a part left out this time goes); every other file of the repo is kept.
        card: the card's file name in ``folder`` (``README.md``): when the repo already holds a card that
            ``card_is_ours(text)`` says this project did not write, it is left as it is and ours is not uploaded.
        commit_message, private, token, revision, create_pr: as ``HfApi.upload_folder`` / ``create_repo``.
    """
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    ignore = []
    if card and card_is_ours and (folder / card).is_file():
        theirs = remote_file(api, repo_id, card, revision)
        if theirs is not None and not card_is_ours(theirs):
            log.warning("%s: its %s was not written by wm-video; left as it is (not replaced by the generated card)",
                        repo_id, card)
            ignore.append(card)
    info = api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model", revision=revision,
                             commit_message=commit_message, create_pr=create_pr, ignore_patterns=ignore or None,
                             delete_patterns=[f"{d}/*" for d in replaced] or None)
    return str(getattr(info, "commit_url", info))
