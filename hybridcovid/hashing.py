"""Content hashes of files, recorded wherever provenance matters."""

import hashlib


def file_sha256(path: str) -> str:
  """The hex sha256 of a file's bytes, read in 1 MiB chunks."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()
