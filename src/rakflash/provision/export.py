"""The rows written to modules, in the files a network server imports devices from.

- ``tts-csv``: The Things Stack's end-device CSV (its "CSV File Reference"): semicolons between
  fields, a header row; columns ``id`` (lowercase letters, digits, hyphens), ``dev_eui``,
  ``join_eui``, ``name``, ``app_key``. The reference lists ``dev_eui``, ``join_eui``, ``id`` and
  ``name``; that ``app_key`` is the root key's column is assumed from its JSON format (below) —
  check against your server's version. The frequency plan and LoRaWAN versions are not in a
  batch: choose them in the import dialog.
- ``tts-json``: The Things Stack's end-device JSON (its "JSON File Reference"): one object per
  device, ``ids.device_id``, ``ids.dev_eui``, ``ids.join_eui``, ``supports_join`` and
  ``root_keys.app_key.key`` (a JSON stream: the objects one after the other).
- ``chirpstack``: ChirpStack v4 has no file import (chirpstack/chirpstack issue #403: devices are
  added through its API). The CSV holds, per device, what its API's ``CreateDevice`` and
  ``CreateDeviceKeys`` take: ``dev_eui``, ``name``, ``join_eui``, and ``nwk_key`` — which is
  where ChirpStack v4 keeps a LoRaWAN 1.0.x device's AppKey (api/proto/api/device.proto:
  "For LoRaWAN 1.0.x, use this field for the LoRaWAN 1.0.x 'AppKey'"). The device profile and
  application are the importing script's to choose.

Device ids and names: ``rak-<serial number>`` when it makes a valid id, else ``eui-<DevEUI>``.
"""

from __future__ import annotations

import csv
import io
import json
import re

from .batch import Row
from .ledger import Claim


def device_id(row: Row, claim: Claim) -> str:
    sn = re.sub(r"[^a-z0-9]+", "-", claim.serial_number.lower()).strip("-")
    candidate = f"rak-{sn}"
    return candidate if sn and len(candidate) <= 36 else f"eui-{row.dev_eui.lower()}"


def _csv(header: list[str], lines: list[list[str]], delimiter: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    w.writerow(header)
    w.writerows(lines)
    return buf.getvalue()


def tts_csv(pairs: list[tuple[Row, Claim]]) -> str:
    return _csv(["id", "dev_eui", "join_eui", "name", "app_key"],
                [[device_id(r, c), r.dev_eui, r.app_eui, f"{c.module or 'RAK'} {c.serial_number}", r.app_key]
                 for r, c in pairs], ";")


def tts_json(pairs: list[tuple[Row, Claim]]) -> str:
    return "".join(json.dumps({
        "ids": {"device_id": device_id(r, c), "dev_eui": r.dev_eui, "join_eui": r.app_eui},
        "name": f"{c.module or 'RAK'} {c.serial_number}",
        "supports_join": True,
        "root_keys": {"app_key": {"key": r.app_key}},
    }, indent=2) + "\n" for r, c in pairs)


def chirpstack(pairs: list[tuple[Row, Claim]]) -> str:
    return _csv(["dev_eui", "name", "join_eui", "nwk_key"],
                [[r.dev_eui, device_id(r, c), r.app_eui, r.app_key] for r, c in pairs], ",")


FORMATS = {"tts-csv": tts_csv, "tts-json": tts_json, "chirpstack": chirpstack}


def export_rows(fmt: str, pairs: list[tuple[Row, Claim]]) -> str:
    return FORMATS[fmt](pairs)
