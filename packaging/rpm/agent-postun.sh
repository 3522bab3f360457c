if [ "$1" = "0" ]; then
    rm -rf /var/lib/lindi
    rmdir /etc/lindi 2>/dev/null || true
fi
systemctl daemon-reload >/dev/null 2>&1 || true
