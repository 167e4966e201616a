"""pyproject.toml lists every package by hand (kernels/ and tasks/ install inside tinycnn): a new
subpackage that is not listed is missing from a plain `pip install .`, while an editable install hides it."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALLED_AS = {"tinycnn": "tinycnn", "kernels": "tinycnn.kernels", "tasks": "tinycnn.tasks"}


def listed_packages():
    text = open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read()
    block = re.search(r"^packages = \[(.*?)\]", text, re.S | re.M).group(1)
    return set(re.findall(r'"([\w.]+)"', block))


def packages_on_disk():
    found = set()
    for top, name in INSTALLED_AS.items():
        for folder, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            if "__init__.py" in files:
                rel = os.path.relpath(folder, os.path.join(ROOT, top))
                found.add(name if rel == "." else name + "." + rel.replace(os.sep, "."))
    return found


def test_every_package_is_installed():
    missing = packages_on_disk() - listed_packages()
    assert not missing, f"add these to pyproject.toml's packages: {sorted(missing)}"


def test_no_listed_package_is_missing():
    assert listed_packages() <= packages_on_disk()
