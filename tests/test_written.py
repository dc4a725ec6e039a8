"""The one `written` field (nothing, part, all) and what it says the device holds, from what went
out and was acknowledged (issue 17.4)."""

from __future__ import annotations

from rakflash.written import Written


def test_what_the_chip_holds_follows_what_was_sent_and_acknowledged():
    w = Written()
    assert (w.state, w.holds("RAK811")) == ("nothing", "Nothing was written to the module.")
    w.erase_sent([(0x08000000, 0x08003000), (0x08003000, 0x08004000)])
    assert w.state == "part" and w.holds("RAK811") == (
        "Writing had begun: the erase of 0x08000000-0x08004000 had begun (those pages may be erased, "
        "or still hold the old bytes).")
    w.erase_acknowledged()
    w.acknowledged(0x08000000, 0x08000100)
    w.acknowledged(0x08000100, 0x08000200)
    assert w.bytes == 512 and w.holds("RAK811") == (
        "Part of the image was written: RAK811 holds the new image's bytes at 0x08000000-0x08000200; "
        "0x08000200-0x08004000 is erased.")
    # Written again from the start (the chip restarted mid-write): the erase takes what was written.
    w.erase_sent([(0x08000000, 0x08004000)])
    assert w.bytes == 0 and "may be erased" in w.holds("RAK811")
    w.all_written()
    assert w.holds("RAK811") == "The whole image was written to RAK811 (every block acknowledged)."
    w.verified = True
    assert w.to_dict()["written"] == "all" and w.holds("RAK811").endswith("and verified.")
