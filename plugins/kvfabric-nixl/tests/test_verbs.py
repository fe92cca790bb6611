"""The bundled-libibverbs provider fix: pure plan, the binary's compiled-in path, and apply's gates."""
from __future__ import annotations

from hypothesis import given, strategies as st

from kvfabric_nixl import verbs

DEB = "/usr/lib/x86_64-linux-gnu/libibverbs"


def test_reads_provider_dir_and_abi_compiled_into_the_library():
    blob = b"\x00junk\x00/usr/lib64/libibverbs/lib%s-rdmav34.so\x00more"
    assert verbs.provider_dir_of(blob) == ("/usr/lib64/libibverbs", "34")
    assert verbs.provider_dir_of(b"no path here") is None


def test_adds_system_providers_of_the_same_abi_by_absolute_stem():
    stems, note = verbs.plan("/usr/lib64/libibverbs", "34",
                             [f"{DEB}/librxe-rdmav34.so", f"{DEB}/libmlx4-rdmav34.so"], [])
    assert stems == (f"{DEB}/libmlx4", f"{DEB}/librxe") and "ABI 34" in note


def test_other_abi_is_named_not_added():
    stems, note = verbs.plan("/usr/lib64/libibverbs", "34", [f"{DEB}/librxe-rdmav50.so"], [])
    assert stems == () and "librxe-rdmav50.so" in note and "cannot load" in note


def test_providers_the_bundled_library_finds_itself_are_left_alone():
    assert verbs.plan("/usr/lib64/libibverbs", "34", ["/usr/lib64/libibverbs/librxe-rdmav34.so"], [])[0] == ()
    assert verbs.plan("/usr/lib64/libibverbs", "34", [f"{DEB}/librxe-rdmav34.so"], ["librxe-rdmav34.so"])[0] == ()


@given(st.lists(st.sampled_from(["rxe", "mlx4", "siw", "efa"]), unique=True), st.sampled_from(["", "x", "y:z"]))
def test_user_drivers_are_kept_and_nothing_is_listed_twice(names, env):
    paths = [f"{DEB}/lib{n}-rdmav34.so" for n in names]
    pre = ":".join(f"{DEB}/lib{n}" for n in names[:1])
    stems, _ = verbs.plan("/usr/lib64/libibverbs", "34", paths, [], ":".join(filter(None, [env, pre])))
    assert len(stems) == len(set(stems)) == len(names) - (1 if names else 0)


def test_no_device_no_change(tmp_path, monkeypatch):
    pkg = tmp_path / "fake_nixl"
    pkg.mkdir()
    (tmp_path / "fake_nixl.libs").mkdir()
    lib = tmp_path / "fake_nixl.libs" / "libibverbs-abc.so.1"
    lib.write_bytes(b"/usr/lib64/libibverbs/lib%s-rdmav34.so")
    monkeypatch.setattr(verbs, "_DONE", {})
    monkeypatch.delenv("RDMAV_DRIVERS", raising=False)
    fix = verbs.apply(str(pkg / "__init__.py"), devices_dir=str(tmp_path / "none"))
    assert fix.bundled == str(lib) and fix.drivers == () and "no RDMA device" in fix.note
    monkeypatch.setattr(verbs, "_DONE", {})
    assert verbs.apply(str(tmp_path / "other" / "__init__.py")).note == "the engine uses the system libibverbs"


def test_a_provider_the_wheel_carries_is_not_loaded_twice():
    stems, _ = verbs.plan("/usr/lib64/libibverbs", "34", [f"{DEB}/libmlx5-rdmav34.so", f"{DEB}/librxe-rdmav34.so"],
                          [], "", ["libmlx5-79ef1d27.so.1.24.48.0", "libibverbs-1de1263b.so.1.14.48.0"])
    assert stems == (f"{DEB}/librxe",)
