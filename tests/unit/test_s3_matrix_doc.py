"""docs/S3_API_IMPLEMENTATION.md is what docs/gen_s3_matrix.py generates from the
operation classifier: the documented matrix and the code cannot disagree.

After changing ``addons/s3/ops.py`` (or the generator), regenerate the document:

    .venv/bin/python docs/gen_s3_matrix.py
"""

from __future__ import annotations

import difflib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from addons.s3.ops import Action

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATOR = REPO_ROOT / "docs" / "gen_s3_matrix.py"
DOCUMENT = REPO_ROOT / "docs" / "S3_API_IMPLEMENTATION.md"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_s3_matrix", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_committed_matrix_is_what_the_classifier_says() -> None:
    generated: str = _generator().render()
    committed = DOCUMENT.read_text()
    if committed != generated:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                generated.splitlines(keepends=True),
                "committed",
                "generated",
            )
        )
        raise AssertionError(
            "docs/S3_API_IMPLEMENTATION.md is out of date; regenerate it with"
            f" `.venv/bin/python docs/gen_s3_matrix.py`:\n{diff}"
        )


def test_matrix_covers_every_kind_of_operation() -> None:
    """Each classifier outcome and each family of operations has rows."""
    generator = _generator()
    examples = [example for _, section in generator.SECTIONS for example in section]
    actions = {op.action for example in examples for op in example.classified()}
    assert actions == set(Action)
    documented = {name for example in examples for name, _ in example.operations}
    for name in (
        "PutObject",
        "GetObject",
        "HeadObject",
        "DeleteObject",
        "DeleteObjects",
        "CopyObject",
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPartCopy",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
        "ListParts",
        "ListMultipartUploads",
        "ListBuckets",
        "ListObjects",
        "ListObjectsV2",
        "ListObjectVersions",
        "SelectObjectContent",
        "PostObject",
        "RestoreObject",
        "PutObjectTagging",
        "PutObjectAcl",
        "PutObjectRetention",
        "PutObjectLegalHold",
        "PutBucketPolicy",
        "PutBucketLifecycleConfiguration",
    ):
        assert name in documented, name
