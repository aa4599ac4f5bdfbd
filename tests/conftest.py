"""Pytest fixtures for integration tests: backends, gateway processes, awscli.

Quick reference (details in tests/harness.py):

- ``backend``: parametrized over moto and rclone (session-scoped processes).
- ``moto_backend`` / ``rclone_backend``: one specific backend.
- ``bucket``: a fresh bucket on ``backend``; ``harness.make_bucket(b)`` for more.
- ``e2e_backend``: like ``backend``, plus the external (cloud) backends that
  ``S3GW_E2E_*`` variables describe: aws, wasabi and hetzner are always listed
  and skip until configured (README.md, "Tests against a cloud account").
- ``area`` / ``make_area()``: a ``BucketArea`` on ``e2e_backend``: a fresh bucket
  on a local backend, a unique prefix of the given bucket on an external one
  (deleted after the test).
- ``gateway``: the default gateway in front of ``backend``.
- ``gateway_factory(backend, overrides=None, *, extra_args=(), fresh=False)``:
  a gateway with config overrides (deep-merged), cached per session by
  backend + overrides + extra_args; ``fresh=True`` gives an uncached process.
- ``aws_cli(target, *args, credentials=None, input=None, timeout=120, check=False)``.

When a test fails, the log of every gateway it used and of every backend that
logged something during the test is attached to the report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.faultproxy import PASS, FaultProxy, Faulty
from tests.harness import (
    AwsCli,
    Backend,
    BucketArea,
    ExternalBackendNotConfigured,
    Gateway,
    GatewayFactory,
    ManagedProcess,
    delete_bucket_area,
    external_backend,
    external_backend_names,
    make_bucket,
    new_bucket_area,
    requested_external_backends,
    start_moto,
    start_rclone,
)

BACKEND_NAMES = ("moto", "rclone")
EXTERNAL_BACKEND_NAMES = external_backend_names(os.environ)
if clash := set(BACKEND_NAMES) & set(EXTERNAL_BACKEND_NAMES):
    raise ValueError(f"S3GW_E2E_EXTERNAL: {sorted(clash)} name local backends")

# Every process the harness started in this session, and the ones handed to the
# running test, so a failure report can show the relevant logs.
_started_processes: list[ManagedProcess] = []
_processes_used_by_test: list[ManagedProcess] = []
_log_marks_key = pytest.StashKey[dict[int, int]]()


@pytest.fixture(scope="session", autouse=True)
def _hermetic_aws_environment() -> Iterator[None]:
    """Keep the developer's AWS profile, keys and endpoints out of the tests."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("AWS_")]:
            patch.delenv(name)
        patch.setenv("AWS_CONFIG_FILE", os.devnull)
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        yield


@pytest.fixture(scope="session")
def harness_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session directory for logs, backend data and gateway configs."""
    return tmp_path_factory.mktemp("harness")


def _register(process: ManagedProcess) -> None:
    _started_processes.append(process)


@pytest.fixture(scope="session")
def moto_backend(harness_dir: Path) -> Iterator[Backend]:
    backend = start_moto(harness_dir / "moto")
    _register(backend.process)
    yield backend
    backend.stop()


@pytest.fixture(scope="session")
def rclone_backend(harness_dir: Path) -> Iterator[Backend]:
    backend = start_rclone(harness_dir / "rclone", harness_dir / "rclone" / "data")
    _register(backend.process)
    yield backend
    backend.stop()


def _local_backend(request: pytest.FixtureRequest, name: str) -> Backend:
    selected: Backend = request.getfixturevalue(f"{name}_backend")
    assert selected.process is not None
    _processes_used_by_test.append(selected.process)
    return selected


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each test using this runs once per backend."""
    return _local_backend(request, request.param)


@pytest.fixture
def bucket(backend: Backend) -> str:
    """A fresh, empty bucket on ``backend``."""
    return make_bucket(backend)


@pytest.fixture(params=(*BACKEND_NAMES, *EXTERNAL_BACKEND_NAMES))
def e2e_backend(request: pytest.FixtureRequest) -> Backend:
    """The local backends, then the external ones. An external backend whose
    variables are missing is skipped, or fails if ``S3GW_E2E_EXTERNAL`` names it."""
    name: str = request.param
    if name in BACKEND_NAMES:
        return _local_backend(request, name)
    try:
        return external_backend(name, os.environ)
    except ExternalBackendNotConfigured as exc:
        if name in requested_external_backends(os.environ):
            pytest.fail(
                f"S3GW_E2E_EXTERNAL names {name}, but these are not set: {', '.join(exc.missing)}",
                pytrace=False,
            )
        pytest.skip(
            f"no {name} account: set {', '.join(exc.missing)}"
            ' (README.md, "Tests against a cloud account")'
        )


@pytest.fixture
def make_area(e2e_backend: Backend) -> Iterator[Callable[[], BucketArea]]:
    """Makes ``BucketArea``s on ``e2e_backend``; what the test wrote to those in a
    shared (external) bucket is deleted afterwards."""
    made: list[BucketArea] = []

    def make() -> BucketArea:
        made.append(new_bucket_area(e2e_backend))
        return made[-1]

    yield make
    for area in made:
        delete_bucket_area(area)


@pytest.fixture
def area(make_area: Callable[[], BucketArea]) -> BucketArea:
    """A ``BucketArea`` for the test: its own bucket, or its own prefix of a shared one."""
    return make_area()


@pytest.fixture(scope="session")
def gateway_factory(harness_dir: Path) -> Iterator[GatewayFactory]:
    factory = GatewayFactory(
        harness_dir / "gateways", on_start=_register, on_use=_processes_used_by_test.append
    )
    yield factory
    factory.stop_all()


@pytest.fixture
def gateway(backend: Backend, gateway_factory: GatewayFactory) -> Gateway:
    """The gateway with the default config in front of ``backend``."""
    return gateway_factory(backend)


@pytest.fixture(scope="module")
def backend_proxies() -> Iterator[dict[str, FaultProxy]]:
    """One fault proxy per backend, shared by a module's ``faulty`` gateways."""
    proxies: dict[str, FaultProxy] = {}
    yield proxies
    for proxy in proxies.values():
        proxy.close()


@pytest.fixture
def faulty(
    backend: Backend,
    gateway_factory: GatewayFactory,
    backend_proxies: dict[str, FaultProxy],
) -> Iterator[Faulty]:
    """A gateway whose backend connections pass through a fault proxy (reset to pass)."""
    proxy = backend_proxies.get(backend.name)
    if proxy is None:
        parts = urlsplit(backend.endpoint_url)
        assert parts.hostname is not None and parts.port is not None
        proxy = backend_proxies[backend.name] = FaultProxy(parts.hostname, parts.port)
    proxy.set_fault(PASS)
    gateway = gateway_factory(backend, {"backend": {"url": proxy.url}})
    yield Faulty(backend, gateway, proxy)
    proxy.set_fault(PASS)


@pytest.fixture(scope="session")
def aws_cli(harness_dir: Path) -> AwsCli:
    return AwsCli(harness_dir / "aws")


# --------------------------------------------------------------------------- failure logs


@pytest.fixture(autouse=True)
def _remember_log_positions(request: pytest.FixtureRequest) -> None:
    """Note where each process log stands, so a failure shows only this test's part."""
    _processes_used_by_test.clear()
    request.node.stash[_log_marks_key] = {
        id(process): process.log_mark() for process in _started_processes
    }


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        marks = item.stash.get(_log_marks_key, {})
        for process in _started_processes:
            since = marks.get(id(process), 0)
            used = any(p is process for p in _processes_used_by_test)
            if used or process.output(since).strip():
                report.sections.append(
                    (f"{process.name} log ({report.when})", process.describe(since))
                )
    return report
