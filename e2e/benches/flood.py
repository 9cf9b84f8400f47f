"""Bounded floods for e2e/benches/arp_latency.rs, run inside the client namespace.

  flood.py udp  DEST_IP COUNT                 UDP datagrams to DEST_IP:9 (discard)
  flood.py arp  IFACE TARGET_IP SRC_IP COUNT  ARP requests for TARGET_IP; counts replies

Prints one JSON line: sent, replies (arp), seconds. Stops after COUNT or 20 s."""
import json
import socket
import struct
import sys
import time

LIMIT = 20.0


def udp(dest, count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"x" * 512
    start = time.monotonic()
    sent = 0
    while sent < count and time.monotonic() - start < LIMIT:
        try:
            s.sendto(payload, (dest, 9))
            sent += 1
        except OSError:
            pass
    print(json.dumps({"sent": sent, "seconds": time.monotonic() - start}))


def arp(iface, target, src, count):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    s.bind((iface, 0))
    s.setblocking(False)
    mac = s.getsockname()[4]
    frame = (b"\xff" * 6 + mac + b"\x08\x06"
             + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
             + mac + socket.inet_aton(src) + b"\x00" * 6 + socket.inet_aton(target))
    frame += b"\x00" * (60 - len(frame))
    tip = socket.inet_aton(target)
    start = time.monotonic()
    sent = replies = 0

    def drain():
        n = 0
        while True:
            try:
                f = s.recv(2048)
            except BlockingIOError:
                return n
            # An ARP reply (op 2) from the target address.
            if len(f) >= 42 and f[20:22] == b"\x00\x02" and f[28:32] == tip:
                n += 1

    while sent < count and time.monotonic() - start < LIMIT:
        try:
            s.send(frame)
            sent += 1
        except BlockingIOError:
            pass
        if sent % 64 == 0:
            replies += drain()
    end = time.monotonic()
    while time.monotonic() - end < 0.5:
        replies += drain()
        time.sleep(0.01)
    print(json.dumps({"sent": sent, "replies": replies, "seconds": end - start}))


if sys.argv[1] == "udp":
    udp(sys.argv[2], int(sys.argv[3]))
else:
    arp(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
