"""Content hashes of files, recorded wherever provenance matters."""

import hashlib


def _file_digest(path: str, algorithm: str) -> str:
  digest = hashlib.new(algorithm)
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def file_sha256(path: str) -> str:
  """The hex sha256 of a file's bytes, read in 1 MiB chunks."""
  return _file_digest(path, 'sha256')


def file_md5(path: str) -> str:
  """The hex md5 of a file's bytes: the checksum Keras publishes for its weight files."""
  return _file_digest(path, 'md5')
