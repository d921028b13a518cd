"""
The wheels a GPU box without network lacks, for its Python: PyAV, and bitsandbytes with only the library of its CUDA
release (the full wheel, 43 MB with every CUDA and ROCm build, would not travel). Run here, with network; the folder
travels with the working tree (README, "The prepared GPU check").

    python wheels.py .whl --python 3.12 --cuda 130       # 38 MB of wheels
"""

import argparse
import os
import subprocess
import sys
import zipfile

from plumbing.errors import Help, cli

PACKAGES = ("av==18.1.0", "bitsandbytes==0.50.2")


def download(folder, python, cuda):
    """The PACKAGES' manylinux x86_64 wheels for `python` in `folder`, bitsandbytes cut to the library of `cuda`.
    {file: MiB}."""
    os.makedirs(folder, exist_ok=True)
    platforms = [f"--platform=manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34)]
    for package in PACKAGES:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        f"--python-version={python}", "--implementation=cp", *platforms, "-d", folder, package],
                       check=True)
    for name in os.listdir(folder):
        if name.startswith("bitsandbytes-"):
            keep_only(os.path.join(folder, name), {"bitsandbytes/libbitsandbytes_cpu.so",
                                                   f"bitsandbytes/libbitsandbytes_cuda{cuda}.so"})
    return {n: os.path.getsize(os.path.join(folder, n)) / 2**20 for n in sorted(os.listdir(folder))}


def keep_only(path, libraries):
    """Rewrite the wheel at `path` without the shared libraries not in `libraries`, and its RECORD without them."""
    with zipfile.ZipFile(path) as z:
        entries = {i.filename: z.read(i) for i in z.infolist()
                   if not i.filename.endswith(".so") or i.filename in libraries}
    record = next(n for n in entries if n.endswith(".dist-info/RECORD"))
    entries[record] = "".join(line + "\n" for line in entries[record].decode().splitlines()
                              if line.split(",")[0] in entries).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for filename, content in entries.items():
            z.writestr(filename, content)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=Help)
    # ---
    parser.add_argument("folder", nargs="?", default=".whl", help="where to put the wheels")
    parser.add_argument("--python", default="3.12", help="the GPU box's Python")
    parser.add_argument("--cuda", default="130", help="the GPU box's CUDA release, as bitsandbytes names it")
    # ---
    args = parser.parse_args(argv)
    sizes = download(args.folder, args.python, args.cuda)
    for name, mib in sizes.items():
        print(f"  {name:<70}  {mib:6.1f} MiB")
    print(f"  {'total':<70}  {sum(sizes.values()):6.1f} MiB")


if __name__ == "__main__":
    cli(main)
