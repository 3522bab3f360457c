getent group lindi >/dev/null || groupadd --system lindi
getent passwd lindi >/dev/null || useradd --system --gid lindi --no-create-home --home-dir /var/lib/lindi-collector --shell /sbin/nologin lindi
install -d -o lindi -g lindi -m 0700 /var/lib/lindi-collector
systemctl daemon-reload >/dev/null 2>&1 || true
systemctl enable lindi-collector.service >/dev/null 2>&1 || true
