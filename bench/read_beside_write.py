"""4 KiB reads of a file on one mount while another mount rewrites it: every write opens the
file, writes 4 KiB and closes it (a write session each, so a version raise each).
python3 bench/read_beside_write.py WRITER_DIR READER_DIR SECONDS: the two folders are the
same folder seen through two mounts of one cluster. Prints the writes, the reads (direct
I/O, a new descriptor each) and the reads' latency."""
import mmap
import os
import random
import sys
import threading
import time

writer_dir, reader_dir, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
pieces = 256
with open(os.path.join(writer_dir, "beside.dat"), "wb") as f:
    f.write(os.urandom(pieces * 4096))
time.sleep(0.5)
stop = time.time() + seconds
writes = 0


def writer():
    global writes
    while time.time() < stop:
        with open(os.path.join(writer_dir, "beside.dat"), "r+b") as f:
            f.seek(random.randrange(pieces) * 4096)
            f.write(os.urandom(4096))
        writes += 1
        time.sleep(0.002)


thread = threading.Thread(target=writer)
thread.start()
buf = mmap.mmap(-1, 4096)
latencies = []
while time.time() < stop:
    fd = os.open(os.path.join(reader_dir, "beside.dat"), os.O_RDONLY | os.O_DIRECT)
    start = time.perf_counter()
    os.preadv(fd, [buf], random.randrange(pieces) * 4096)
    latencies.append(time.perf_counter() - start)
    os.close(fd)
thread.join()
os.unlink(os.path.join(writer_dir, "beside.dat"))
latencies.sort()
n = len(latencies)
print(
    f"writes {writes}, reads {n}, median {latencies[n // 2] * 1e6:.0f} us, "
    f"p99 {latencies[int(n * 0.99)] * 1e6:.0f} us, longest {latencies[-1] * 1e3:.1f} ms, "
    f"over 50 ms: {sum(1 for x in latencies if x > 0.05)}"
)
