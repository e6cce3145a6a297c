"""A headless gnome-keyring Secret Service on a private D-Bus session bus, in a temp HOME."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from tests.servers import stop_pid, temp_home_env, wait_until

PASSWORD = "testpass"


def missing_reason() -> str | None:
    for exe in ("dbus-daemon", "gnome-keyring-daemon", "dbus-send"):
        if shutil.which(exe) is None:
            return f"{exe} is not installed (apt-get install -y gnome-keyring dbus)"
    try:
        import keyring  # noqa: F401
        import secretstorage  # noqa: F401
    except ImportError:
        return "keyring and secretstorage are not installed (pip install keyring secretstorage)"
    return None


class GnomeKeyring:
    """dbus-daemon + gnome-keyring-daemon --components=secrets; `unlock=False` leaves no unlocked login keyring."""

    def __init__(self, *, unlock: bool = True) -> None:
        self.unlock = unlock
        self.home = tempfile.mkdtemp(prefix="kms-cli-keyring-")
        self.env: dict[str, str] = temp_home_env(self.home)
        self.bus: subprocess.Popen | None = None
        self.daemon: subprocess.Popen | None = None

    def start(self) -> "GnomeKeyring":
        socket_path = os.path.join(self.env["XDG_RUNTIME_DIR"], "bus")
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.env}
        self.bus = subprocess.Popen(
            ["dbus-daemon", "--session", "--nofork", "--print-address=1", f"--address=unix:path={socket_path}"],
            env=base,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        address = self.bus.stdout.readline().strip()
        if not address:
            raise RuntimeError("dbus-daemon printed no address")
        self.env["DBUS_SESSION_BUS_ADDRESS"] = address
        args = ["gnome-keyring-daemon", "--foreground", "--components=secrets"]
        if self.unlock:
            args.insert(2, "--unlock")
        self.daemon = subprocess.Popen(
            args,
            env={**base, "DBUS_SESSION_BUS_ADDRESS": address},
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if self.unlock:
            self.daemon.stdin.write(PASSWORD.encode())
        self.daemon.stdin.close()

        def ready() -> bool:
            out = subprocess.run(
                ["dbus-send", f"--bus={address}", "--print-reply", "--dest=org.freedesktop.DBus", "/",
                 "org.freedesktop.DBus.NameHasOwner", "string:org.freedesktop.secrets"],
                capture_output=True, text=True, timeout=2,
            ).stdout
            return "boolean true" in out

        wait_until(ready, 10, "gnome-keyring secret service")
        return self

    def lock_all(self) -> None:
        """Lock every collection (the Secret Service Lock call needs no prompt)."""
        address = self.env["DBUS_SESSION_BUS_ADDRESS"]
        from jeepney import DBusAddress, new_method_call
        from jeepney.io.blocking import open_dbus_connection

        conn = open_dbus_connection(bus=address)
        try:
            service = DBusAddress("/org/freedesktop/secrets", bus_name="org.freedesktop.secrets",
                                  interface="org.freedesktop.Secret.Service")
            props = DBusAddress("/org/freedesktop/secrets", bus_name="org.freedesktop.secrets",
                                interface="org.freedesktop.DBus.Properties")
            reply = conn.send_and_get_reply(new_method_call(props, "Get", "ss",
                                                            ("org.freedesktop.Secret.Service", "Collections")))
            collections = reply.body[0][1]
            conn.send_and_get_reply(new_method_call(service, "Lock", "ao", (collections,)))
        finally:
            conn.close()

    def stop(self) -> None:
        for proc in (self.daemon, self.bus):
            if proc is not None:
                stop_pid(proc)
        self.daemon = self.bus = None
        shutil.rmtree(self.home, ignore_errors=True)
