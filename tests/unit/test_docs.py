"""The documentation a newcomer reads stays connected to the code: links resolve,
every diagram source has its rendered SVG, and the architecture document names
every addon of the chain the gateway loads."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from xml.etree import ElementTree

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = REPO_ROOT / "docs"
DIAGRAMS = DOCS / "diagrams"
ARCHITECTURE = DOCS / "ARCHITECTURE.md"
LINKED_DOCUMENTS = [REPO_ROOT / "README.md", ARCHITECTURE, DOCS / "S3_API_IMPLEMENTATION.md"]
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_SVG = "{http://www.w3.org/2000/svg}"


def local_links(document: Path) -> list[str]:
    """Targets of the document's Markdown links and images that are files in the repo."""
    targets = [match.group(1) for match in _LINK.finditer(document.read_text())]
    return [t.split("#", 1)[0] for t in targets if not re.match(r"[a-z]+:", t) and t[0] != "#"]


@pytest.mark.parametrize("document", LINKED_DOCUMENTS, ids=lambda p: p.name)
def test_local_links_resolve(document: Path) -> None:
    links = local_links(document)
    assert links, f"{document.name} links to nothing"
    missing = [link for link in links if not (document.parent / link).exists()]
    assert missing == []


def test_readme_links_every_design_document() -> None:
    linked = {(REPO_ROOT / link).resolve() for link in local_links(REPO_ROOT / "README.md")}
    wanted = [
        ARCHITECTURE,
        DOCS / "S3_API_IMPLEMENTATION.md",
        DOCS / "ENCRYPTION_DESIGN.md",
        DOCS / "OBSERVABILITY.md",
        *sorted((DOCS / "adr").glob("*.md")),
    ]
    assert [path.relative_to(REPO_ROOT) for path in wanted if path not in linked] == []


def graph_name(source: Path) -> str:
    match = re.search(r"^\s*(?:strict\s+)?digraph\s+(\w+)", source.read_text(), re.MULTILINE)
    assert match is not None, f"{source.name}: no digraph"
    return match.group(1)


def test_every_diagram_source_is_rendered_and_shown() -> None:
    """Each docs/diagrams/*.dot has its SVG beside it (bash docs/diagrams/build.sh),
    rendered from a graph of that name, and the architecture document shows it."""
    sources = sorted(DIAGRAMS.glob("*.dot"))
    assert sources
    shown = {(ARCHITECTURE.parent / link).resolve() for link in local_links(ARCHITECTURE)}
    for source in sources:
        svg = source.with_suffix(".svg")
        assert svg.is_file(), f"{svg.name} missing: run bash docs/diagrams/build.sh"
        root = ElementTree.parse(svg).getroot()
        assert root.tag == f"{_SVG}svg"
        titles = [element.text for element in root.iter(f"{_SVG}title")]
        assert graph_name(source) in titles, f"{svg.name} was not rendered from {source.name}"
        assert svg.resolve() in shown, f"{svg.name} is not shown in ARCHITECTURE.md"


def chain_addons() -> list[str]:
    """Class names of the addons ``addons/gateway.py`` puts in its chain, in order."""
    tree = ast.parse((REPO_ROOT / "addons" / "gateway.py").read_text())
    instances: dict[str, str] = {}
    chain: list[ast.expr] = []
    for node in tree.body:
        if not isinstance(node, ast.Assign) or not isinstance(node.targets[0], ast.Name):
            continue
        target, value = node.targets[0].id, node.value
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
            instances[target] = value.func.id
        elif target == "addons" and isinstance(value, ast.List):
            chain = value.elts
    names = []
    for element in chain:
        if isinstance(element, ast.Call) and isinstance(element.func, ast.Name):
            names.append(element.func.id)
        elif isinstance(element, ast.Name):
            names.append(instances[element.id])
    assert names, "no addons = [...] list found in addons/gateway.py"
    return names


def test_architecture_names_every_addon_of_the_chain() -> None:
    """Adding, removing or renaming an addon means updating the architecture
    document and its chain diagram (then bash docs/diagrams/build.sh)."""
    document = ARCHITECTURE.read_text()
    diagram = (DIAGRAMS / "addon-chain.dot").read_text()
    for name in chain_addons():
        assert f"`{name}`" in document, f"{name} is not in the addon table of ARCHITECTURE.md"
        assert re.search(rf"\b{name}\b", diagram), f"{name} is not in diagrams/addon-chain.dot"
