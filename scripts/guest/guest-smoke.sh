# Default guest command (installed as /etc/ferry/smoke.sh; runs with cwd=/mnt).
# Lists the export, writes guest-hello.txt, reads it back, reads host-hello.txt if present, syncs.
set -e
echo "--- ls -la /mnt"
ls -la /mnt
msg="hello from the ferry guest"
echo "$msg" > /mnt/guest-hello.txt
back=$(cat /mnt/guest-hello.txt)
if [ "$back" != "$msg" ]; then
  echo "smoke: read-back mismatch: got '$back'"
  exit 1
fi
echo "smoke: read-back ok"
if [ -f /mnt/host-hello.txt ]; then
  echo "--- host-hello.txt"
  cat /mnt/host-hello.txt
  echo "--- end"
fi
sync
echo "smoke: ok"
