"""Creates a container on Azurite with the well-known development account (SharedKey auth).

Usage: azurite_mkcontainer.py http://127.0.0.1:PORT CONTAINER   (exit 0 when created or existing)
"""
import base64, hashlib, hmac, sys, urllib.request, urllib.error
from email.utils import formatdate

ACCOUNT = "devstoreaccount1"
# Azurite's public, documented development key: not a secret.
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
base, container = sys.argv[1].rstrip("/"), sys.argv[2]
date, ver = formatdate(usegmt=True), "2021-08-06"
path = f"/{ACCOUNT}/{container}"
sts = "\n".join(["PUT", "", "", "", "", "application/octet-stream", "", "", "", "", "", "",
                 f"x-ms-date:{date}\nx-ms-version:{ver}\n/{ACCOUNT}{path}\nrestype:container"])
sig = base64.b64encode(hmac.new(base64.b64decode(KEY), sts.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(f"{base}{path}?restype=container", method="PUT", data=b"",
    headers={"Content-Type": "application/octet-stream", "x-ms-date": date, "x-ms-version": ver,
             "Authorization": f"SharedKey {ACCOUNT}:{sig}"})
try:
    urllib.request.urlopen(req)
except urllib.error.HTTPError as e:
    if e.code != 409:
        print(e.code, e.read().decode()[:300], file=sys.stderr)
        sys.exit(1)
