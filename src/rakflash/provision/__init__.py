"""Production: give each module its own LoRaWAN keys from a batch file, recorded in a ledger.

- :mod:`.batch` reads and checks the batch CSV (line-numbered problems, before anything is written);
- :mod:`.ledger` records every claim (row ↔ module) before a key is written, in SQLite or PostgreSQL;
- :mod:`.keys` writes a claimed row over AT and reads it back (the settings flow's reads and writes);
- :mod:`.export` writes the claimed rows for a network server's bulk import.
"""
