"""Checkpoint digests and Ed25519 signatures; the PKI that `fl-server init` creates."""

import json
import stat
from pathlib import Path

import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common.errors import ConfigError, DataError
from common.security.checkpoint import load_checkpoint, save_checkpoint
from common.security.pki import (
    PkiPaths,
    add_site_keys,
    check_ca_certificate,
    check_signed_by,
    check_site_key,
    init_pki,
    load_certificate,
    load_signing_key,
    load_verify_key,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    return init_pki(
        tmp_path_factory.mktemp("pki"), ["coordinator.example.org", "10.1.2.3"], ["A", "B"]
    )


def test_pki_layout_permissions_and_certificates(pki: PkiPaths) -> None:
    for private in (pki.ca_key, pki.server_key, pki.site_key("A"), pki.signing_key):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    ca = check_ca_certificate(pki.ca_cert)
    server = load_certificate(pki.server_cert)
    check_signed_by(server, ca, pki.server_cert)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"coordinator.example.org", "localhost"}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {
        "10.1.2.3",
        "127.0.0.1",
        "::1",
    }
    key = check_site_key(pki.site_key("A"))
    assert isinstance(key.curve, ec.SECP384R1)
    public = pki.site_pub("A").read_text()
    assert public.startswith("ecdsa-sha2-nistp384 ")
    # the public file matches the private key
    derived = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    assert public.split()[1] == derived.split()[1]


def test_pki_refuses_to_overwrite_and_rotates_a_site(pki: PkiPaths) -> None:
    with pytest.raises(ConfigError, match="a PKI already exists"):
        init_pki(pki.root, ["x"], ["A"])
    with pytest.raises(ConfigError, match="already has a key"):
        add_site_keys(pki, "A")
    old = pki.site_pub("B").read_text()
    add_site_keys(pki, "B", force=True)
    assert pki.site_pub("B").read_text() != old


def test_bad_key_and_certificate_files(tmp_path: Path, pki: PkiPaths) -> None:
    with pytest.raises(ConfigError, match="site private key not found"):
        check_site_key(tmp_path / "missing.key")
    (tmp_path / "junk.key").write_text("not a key")
    with pytest.raises(ConfigError, match="not an OpenSSH private key"):
        check_site_key(tmp_path / "junk.key")
    with pytest.raises(ConfigError, match="not a CA certificate"):
        check_ca_certificate(pki.server_cert)
    (tmp_path / "junk.crt").write_text("-----BEGIN CERTIFICATE-----\nxx\n")
    with pytest.raises(ConfigError, match=r"not a PEM X\.509 certificate"):
        load_certificate(tmp_path / "junk.crt")
    other = init_pki(tmp_path / "other", ["x"], [])
    with pytest.raises(ConfigError, match="not signed by the given CA"):
        check_signed_by(
            load_certificate(pki.server_cert), load_certificate(other.ca_cert), pki.server_cert
        )


def test_signed_checkpoint_round_trip_and_refusals(tmp_path: Path, pki: PkiPaths) -> None:
    state = {"w": torch.arange(6, dtype=torch.float32), "n": torch.tensor(3)}
    path = tmp_path / "final.pt"
    sidecar = save_checkpoint(
        path, state, {"round": 2}, signing_key=load_signing_key(pki.signing_key)
    )
    assert sidecar["signature"]["algorithm"] == "ed25519"
    loaded, meta = load_checkpoint(path, verify_key=load_verify_key(pki.signing_pub))
    assert torch.equal(loaded["w"], state["w"]) and meta["round"] == 2

    # edited sidecar (e.g. the round number): the signature no longer matches
    doc = json.loads(Path(f"{path}.json").read_text())
    doc["round"] = 99
    Path(f"{path}.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="invalid checkpoint signature"):
        load_checkpoint(path, verify_key=load_verify_key(pki.signing_pub))

    # tampered weights: digest mismatch, whatever the key
    save_checkpoint(path, state, {"round": 2}, signing_key=load_signing_key(pki.signing_key))
    raw = bytearray(path.read_bytes())
    raw[-20] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="digest mismatch"):
        load_checkpoint(path, verify_key=load_verify_key(pki.signing_pub))

    # unsigned: refused when a key is required, accepted (digest only) otherwise
    save_checkpoint(path, state, {"round": 2})
    with pytest.raises(DataError, match="unsigned checkpoint"):
        load_checkpoint(path, verify_key=load_verify_key(pki.signing_pub))
    assert load_checkpoint(path)[1]["round"] == 2

    # signed by another coordinator's key
    other = init_pki(tmp_path / "other", ["x"], [])
    save_checkpoint(path, state, {"round": 2}, signing_key=load_signing_key(other.signing_key))
    with pytest.raises(DataError, match="invalid checkpoint signature"):
        load_checkpoint(path, verify_key=load_verify_key(pki.signing_pub))


def test_a_signed_checkpoint_cannot_be_replayed_as_another(tmp_path: Path, pki: PkiPaths) -> None:
    import shutil

    key, pub = load_signing_key(pki.signing_key), load_verify_key(pki.signing_pub)
    state = {"w": torch.zeros(3)}
    first = tmp_path / "round-0000.pt"
    save_checkpoint(first, state, {"run": "run-1", "role": "round", "round": 0}, signing_key=key)
    final = tmp_path / "final.pt"  # the round-0 model copied over the final one
    shutil.copyfile(first, final)
    shutil.copyfile(f"{first}.json", f"{final}.json")
    with pytest.raises(DataError, match=r"signed as 'round-0000\.pt', not 'final\.pt'"):
        load_checkpoint(final, verify_key=pub)
    # the run is bound too: a resume refuses another run's checkpoint
    assert load_checkpoint(first, verify_key=pub, expect_run="run-1")[1]["round"] == 0
    with pytest.raises(DataError, match="belongs to run 'run-1', not 'run-2'"):
        load_checkpoint(first, verify_key=pub, expect_run="run-2")


@pytest.mark.parametrize("content", ["[1, 2, 3]", "null", '"text"'])
def test_a_sidecar_that_is_not_an_object_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "final.pt"
    save_checkpoint(path, {"w": torch.zeros(3)}, {"round": 1})
    Path(f"{path}.json").write_text(content)
    with pytest.raises(DataError, match="checkpoint sidecar is not a JSON object"):
        load_checkpoint(path)
