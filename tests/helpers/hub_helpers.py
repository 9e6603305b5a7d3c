"""A local folder standing in for the Hugging Face Hub in tests: nothing leaves the machine."""

import fnmatch
import os
import shutil

import huggingface_hub
import pytest
from huggingface_hub.utils import EntryNotFoundError


class LocalHub:
    """``create_repo`` / ``upload_folder`` / ``hf_hub_download`` over ``root/<repo_id>``."""

    def __init__(self, root):
        self.root, self.repos, self.commits = root, {}, []
        #: ``(call name, exception)``: "create_repo" or "upload_folder" raises the exception (a Hub out of reach)
        self.fail_with = None

    def _maybe_fail(self, call):
        if self.fail_with is not None and self.fail_with[0] == call:
            raise self.fail_with[1]

    def create_repo(self, repo_id, private=None, token=None, exist_ok=False, repo_type=None, **_):
        self._maybe_fail("create_repo")
        self.repos[repo_id] = {"private": private, "token": token}
        os.makedirs(os.path.join(self.root, repo_id), exist_ok=True)
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, repo_id, folder_path, commit_message=None, ignore_patterns=(), token=None, **_):
        assert repo_id in self.repos, "upload before create_repo"
        self._maybe_fail("upload_folder")
        self.commits.append(commit_message)
        for base, _, files in os.walk(folder_path):
            for name in files:
                rel = os.path.relpath(os.path.join(base, name), folder_path)
                if any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel.split(os.sep)[0], p) for p in ignore_patterns):
                    continue
                target = os.path.join(self.root, repo_id, rel)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy(os.path.join(base, name), target)

    def hf_hub_download(self, repo_id, filename, **_):
        path = os.path.join(self.root, repo_id, filename)
        if not os.path.isfile(path):
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return path

    def files(self, repo_id):
        top = os.path.join(self.root, repo_id)
        return sorted(os.path.relpath(os.path.join(b, f), top) for b, _, fs in os.walk(top) for f in fs)


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    local = LocalHub(str(tmp_path / "hub"))
    for name in ("create_repo", "upload_folder", "hf_hub_download"):
        monkeypatch.setattr(huggingface_hub, name, getattr(local, name))
    return local
