"""``wm-video push``: upload a world-model folder to the Hugging Face Hub, with its model card."""

from __future__ import annotations


def push(*, model: str, repo_id: str, private: bool = False, license: str | None = None,
         eval_report: str | None = None, revision: str | None = None,
         commit_message: str = "Upload world model with wm-video") -> None:
    """Upload the world model in folder MODEL to the hub model repo REPO_ID (created if absent) in one commit, with
    a model card (README.md: hub metadata, the parts, how to load it, and the PSNR table of its eval report).

    Part folders are replaced whole; the repo's other files stay, a README.md that wm-video did not write included.
    The token comes from `huggingface-cli login` or HF_TOKEN. Load it back anywhere with
    ``WorldModel.from_pretrained("REPO_ID")`` or ``wm-video generate --model REPO_ID``.

    Example:
        wm-video push --model demo_out/world_model --repo-id me/boxing-wm --eval-report demo_out/eval

    Args:
        model: world-model folder (from 'wm-video export' or WorldModel.save_pretrained).
        repo_id: hub model repo, owner/name.
        private: create the repo private (an existing repo keeps its visibility).
        license: the card's license id (default: the folder's, else apache-2.0).
        eval_report: a 'wm-video eval' report (report.json or its folder) for the card's table (default: the one
            evaluated into MODEL/eval, when it is newer than the folder's index).
        revision: branch to push to (default main).
        commit_message: the hub commit's message.
    """
    from wm_video.world_model import WorldModel

    wm = WorldModel.from_pretrained(model)
    url = wm.push_to_hub(repo_id, private=private or None, license=license, eval_report=eval_report,
                         revision=revision, commit_message=commit_message)
    print(f"pushed {model} to {repo_id}: {url}")
