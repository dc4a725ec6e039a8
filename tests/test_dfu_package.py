"""DFU packages (.zip) for the RAK4631: what they carry, which bootloader family, and damaged ones."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile
import zlib

import pytest

from rakflash import dfu_package as dp
from rakflash.errors import PackageError


@pytest.fixture(scope="module")
def key():
    return dp.new_signing_key()


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


FW = bytes(range(256)) * 40 + b"\0firmware RUI_4.0.6_RAK4631\0"


def test_a_signed_package_says_what_its_init_packet_requires(tmp_path, key):
    pkg = dp.load(write(tmp_path, "rui3.zip", dp.secure_package(FW, key_pem=key, fw_version=3)))
    assert pkg.family == dp.SECURE
    app = pkg.application
    assert app.firmware == FW and app.bin_file == "app.bin"
    d = app.to_dict()
    assert d["size"] == len(FW) and d["crc32"] == f"{zlib.crc32(FW):#010x}"
    init = d["init"]
    assert init["type"] == "APPLICATION" and init["fw_version"] == 3 and init["hw_version"] == 52
    assert init["sd_req"] == ["0x0100"] and init["signed"] is True
    assert init["signature_type"] == "ECDSA_P256_SHA256" and init["hash_type"] == "SHA256"
    assert init["sizes"]["application"] == len(FW)
    # The signature covers the serialized InitCommand and checks out with the key's public half.
    assert dp.verify(app.init.command_bytes, app.init.signature, dp.public_key_bytes(key))
    assert not dp.verify(app.init.command_bytes, app.init.signature, dp.public_key_bytes(dp.new_signing_key()))


def test_signing_takes_only_an_ecdsa_p256_key_as_the_bootloader_checks_only_that():
    """Another key type is refused as public_key_bytes refuses it, not a TypeError inside the signing."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    pem = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    for other in (ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP384R1())):
        with pytest.raises(ValueError, match="not an ECDSA P-256 key"):
            dp.sign(b"init command", other.private_bytes(*pem))


def test_init_packet_fields_come_from_the_protobuf_layout_not_from_byte_offsets(tmp_path):
    """Change a field through the protobuf message classes: the parser must follow it wherever it lands."""
    m = dp.messages()
    packet = m["Packet"]()
    packet.ParseFromString(dp.secure_init_packet(FW, key_pem=None, sd_req=(0x0100, 0x0123)))
    packet.command.init.hw_version = 0x1234567     # a longer varint moves every later byte
    packet.command.init.is_debug = True
    init = dp.parse_init(packet.SerializeToString())
    assert init.hw_version == 0x1234567 and init.is_debug and init.sd_req == [0x0100, 0x0123]
    assert init.signed is False and init.app_size == len(FW)


def test_an_unsigned_package_says_so(tmp_path):
    pkg = dp.load(write(tmp_path, "u.zip", dp.secure_package(FW, key_pem=None)))
    assert pkg.application.init.signed is False
    assert pkg.to_dict()["images"][0]["init"]["signature_type"] is None


def test_an_arduino_package_is_told_apart_from_a_rui3_one(tmp_path):
    pkg = dp.load(write(tmp_path, "arduino.zip", dp.legacy_package(FW)))
    assert pkg.family == dp.LEGACY and "Adafruit" in pkg.family_name
    init = pkg.application.init.to_dict()
    assert init["device_type"] == "0x0052" and init["crc16"] == f"{dp.crc16_ccitt(FW):#06x}"


def test_a_legacy_packages_unset_version_is_not_set_not_4294967295(tmp_path):
    """adafruit-nrfutil writes 0xFFFFFFFF when no --application-version is given: that is "not set"."""
    raw = dp.legacy_package(FW)
    assert json.loads(zipfile.ZipFile(io.BytesIO(raw)).read("manifest.json"))["manifest"]["application"][
        "init_packet_data"]["application_version"] == 0xFFFFFFFF          # as adafruit-nrfutil writes it
    pkg = dp.load(write(tmp_path, "arduino.zip", raw))
    assert pkg.application.init.fw_version is None
    assert pkg.application.init.to_dict()["fw_version"] is None
    versioned = dp.load(write(tmp_path, "v.zip", dp.legacy_package(FW, app_version=7)))
    assert versioned.application.init.fw_version == 7


def test_crc16_is_the_legacy_dfu_one():
    assert dp.crc16_ccitt(b"123456789") == 0x29B1


@pytest.mark.parametrize("damage, words", [
    ("not a zip", "not a zip"),
    ("no manifest", "no manifest.json"),
    ("missing bin", "not in the zip"),
    ("tampered bin", "does not match the hash"),
    ("garbage init", "neither a Secure DFU"),
    ("size mismatch", "says"),
])
def test_damaged_packages_are_refused_with_the_reason(tmp_path, key, damage, words):
    good = dp.secure_package(FW, key_pem=key)
    files = {n: zipfile.ZipFile(io.BytesIO(good)).read(n) for n in ("manifest.json", "app.bin", "app.dat")}
    if damage == "not a zip":
        raw = b"PK\x03\x04 this is not really a zip"
    else:
        if damage == "no manifest":
            del files["manifest.json"]
        elif damage == "missing bin":
            del files["app.bin"]
        elif damage == "tampered bin":
            files["app.bin"] = bytes([files["app.bin"][0] ^ 0xFF]) + files["app.bin"][1:]
        elif damage == "garbage init":
            files["app.dat"] = b"\xff\xfe\xfd"
        elif damage == "size mismatch":
            files["app.bin"] = files["app.bin"] + b"\xff" * 4
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for n, data in files.items():
                z.writestr(n, data)
        raw = buf.getvalue()
    with pytest.raises(PackageError) as e:
        dp.load(write(tmp_path, "bad.zip", raw))
    assert words in e.value.message and e.value.exit_code == 3 and e.value.hint


def test_adafruit_nrfutils_own_package_is_read(tmp_path):
    """A package made by adafruit-nrfutil (the tool RAK's Arduino docs use) is recognised as legacy DFU."""
    tool = shutil.which("adafruit-nrfutil")
    if tool is None:
        pytest.skip("adafruit-nrfutil is not installed (pip install -e '.[test]' installs it)")
    app = write(tmp_path, "app.bin", FW)
    out = tmp_path / "genpkg.zip"
    subprocess.run([tool, "dfu", "genpkg", "--dev-type", "0x0052", "--sd-req", "0x00B6",
                    "--application", str(app), str(out)], check=True, capture_output=True, timeout=60)
    pkg = dp.load(out)
    assert pkg.family == dp.LEGACY
    init = pkg.application.init
    assert init.device_type == 0x0052 and init.sd_req == [0x00B6] and init.crc16 == dp.crc16_ccitt(FW)
    assert pkg.application.firmware == FW
    assert json.loads(zipfile.ZipFile(out).read("manifest.json"))["manifest"]["dfu_version"] == 0.5


def _zip_damaged(good: bytes, damage: str, key) -> bytes:
    """``good`` with one defect a cut download, a bad disk or a re-zipping tool leaves (offsets: PKWARE
    APPNOTE 4.3.7 local header, 4.3.12 central directory header)."""
    raw = bytearray(good)
    info = zipfile.ZipFile(io.BytesIO(good)).getinfo("app.bin")
    central = good.find(b"PK\x01\x02")                   # the central header of app.bin
    while good[central + 46:central + 46 + 7] != b"app.bin":
        central = good.find(b"PK\x01\x02", central + 1)
    if damage == "local header":
        raw[info.header_offset + 1] ^= 0xFF                 # "PK\3\4" no more
    elif damage == "encrypted":
        raw[central + 8] |= 0x01                            # general purpose flag bit 0
    elif damage == "method 99":
        raw[central + 10:central + 12] = (99).to_bytes(2, "little")   # WinZip AES
    elif damage == "deflate data":
        data = info.header_offset + 30 + len("app.bin") + len(info.extra)
        for i in range(data + 2, data + 12):
            raw[i] ^= 0x5A
    elif damage == "empty hash":
        packet = dp.messages()["Packet"]()
        packet.ParseFromString(dp.secure_init_packet(FW, key_pem=key))
        packet.signed_command.command.init.hash.ClearField("hash")     # a required field, gone
        return dp.make_package(FW, packet.SerializePartialToString())
    return bytes(raw)


@pytest.mark.parametrize("damage, words", [
    ("local header", "app.bin is damaged in the zip"),
    ("encrypted", "app.bin is encrypted"),
    ("method 99", "compression method 99"),
    ("deflate data", "app.bin is damaged in the zip"),
    ("empty hash", "without the fields dfu-cc.proto requires: signed_command.command.init.hash.hash"),
])
@pytest.mark.parametrize("command", ["inspect", "flash"])
def test_a_package_damaged_in_its_zip_or_init_packet_is_a_package_error_not_an_internal_error(
        tmp_path, key, damage, words, command):
    """Each of these ended in internal-error (BadZipFile, RuntimeError, NotImplementedError,
    zlib.error, protobuf's EncodeError); each is the package's defect, said so, before any port."""
    from conftest import cli_json
    path = write(tmp_path, "rui3.zip", _zip_damaged(dp.secure_package(FW, key_pem=key), damage, key))
    args = (str(path), "--port", str(tmp_path / "no-such-port")) if command == "flash" else (str(path),)
    code, result = cli_json(command, *args)
    assert (code, result["error"]) == (3, "package-error"), result
    assert words in result["message"] and result["hint"], result
