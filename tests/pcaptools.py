"""Writing small captures for tests: pcap in both byte orders and both time units, pcapng."""
import struct


def write_pcap(path, packets, order="<", nano=False, linktype=1):
    """packets: [(timestamp, frame bytes)]."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    unit = 1e9 if nano else 1e6
    with open(path, "wb") as fh:
        fh.write(struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype))
        for ts, frame in packets:
            sec = int(ts)
            frac = int(round((ts - sec) * unit))
            fh.write(struct.pack(order + "IIII", sec, frac, len(frame), len(frame)) + frame)


def _block(order, btype, body):
    body += b"\x00" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack(order + "II", btype, length) + body + struct.pack(order + "I", length)


def write_pcapng(path, packets, order="<", tsresol=6, linktype=1):
    """One section, one interface with if_tsresol = 10^-tsresol, enhanced packet blocks."""
    shb = struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    option = struct.pack(order + "HH", 9, 1) + bytes([tsresol]) + b"\x00" * 3 + struct.pack(order + "HH", 0, 0)
    idb = struct.pack(order + "HHI", linktype, 0, 65535) + option
    with open(path, "wb") as fh:
        fh.write(_block(order, 0x0A0D0D0A, shb))
        fh.write(_block(order, 1, idb))
        for ts, frame in packets:
            ticks = int(round(ts * 10 ** tsresol))
            epb = struct.pack(order + "IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)) + frame
            fh.write(_block(order, 6, epb))
