"""Ships the repository's top-level `data/` (bundled models, tokenizers, circuits) and `app/` (the web app)
inside the wheel, as `saelab/_bundled/data` and `saelab/_bundled/app`, so that `pip install .` and a built
wheel work without the source tree. `saelab.paths` finds them there. Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLED = ("data", "app")


class BuildPyWithBundledFolders(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the folders from the source tree
        for name in BUNDLED:
            shutil.copytree(ROOT / name, Path(self.build_lib) / "saelab" / "_bundled" / name,
                            dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithBundledFolders})
