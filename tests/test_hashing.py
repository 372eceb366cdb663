import hashlib

from hybridcovid import hashing


def test_file_digests_match_hashlib_across_chunks(tmp_path):
  data = bytes(range(256)) * 5000  # 1.2 MiB: more than one chunk.
  path = tmp_path / 'blob.bin'
  path.write_bytes(data)
  assert hashing.file_sha256(str(path)) == hashlib.sha256(data).hexdigest()
  assert hashing.file_md5(str(path)) == hashlib.md5(data).hexdigest()
