getent group lindi-collector >/dev/null || groupadd --system lindi-collector
getent passwd lindi-collector >/dev/null || useradd --system --gid lindi-collector --no-create-home --home-dir /var/lib/lindi-collector --shell /sbin/nologin lindi-collector
install -d -o lindi-collector -g lindi-collector -m 0700 /var/lib/lindi-collector
systemctl daemon-reload >/dev/null 2>&1 || true
# Enable on first install only: an upgrade keeps what the admin chose.
if [ "$1" -eq 1 ]; then
    systemctl enable lindi-collector.service >/dev/null 2>&1 || true
fi
