"""Sphinx configuration for the manual in docs/ (Markdown, read by MyST).

Build it as CI does; any warning fails it, so a broken link or anchor, a page left out of
the table of contents or a missing include does too:

    .venv/bin/pip install -e '.[docs]'
    .venv/bin/sphinx-build -W --keep-going -n -q -b html docs /tmp/twilight-docs
"""

project = "twilight-agent"
author = "twilight-agent contributors"
extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Anchors for headings down to ###, spelled as GitHub spells them, so `page.md#heading`
# links work both here and when the Markdown is read on the forge; a link to an anchor
# that does not exist is a warning, and so an error in the strict build.
myst_heading_anchors = 3
myst_enable_extensions = ["deflist"]

html_theme = "furo"
html_title = "twilight-agent"
html_show_sourcelink = False
