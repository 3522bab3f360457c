# On erase (not upgrade): stop and disable the service before its files go.
if [ "$1" -eq 0 ]; then
    systemctl disable --now lindi-agent.service >/dev/null 2>&1 || true
    systemctl disable --now 'lindi-agent-tap@*.service' >/dev/null 2>&1 || true
fi
