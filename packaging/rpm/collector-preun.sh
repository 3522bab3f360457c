# On erase (not upgrade): stop and disable the service before its files go.
if [ "$1" -eq 0 ]; then
    systemctl disable --now lindi-collector.service >/dev/null 2>&1 || true
fi
