getent group lindi >/dev/null || groupadd --system lindi
getent passwd lindi >/dev/null || useradd --system --gid lindi --no-create-home --home-dir /var/lib/lindi --shell /sbin/nologin lindi
install -d -o lindi -g lindi -m 0700 /var/lib/lindi
systemctl daemon-reload >/dev/null 2>&1 || true
# Enable on first install only: an upgrade keeps what the admin chose.
if [ "$1" -eq 1 ]; then
    systemctl enable lindi-agent.service >/dev/null 2>&1 || true
fi
