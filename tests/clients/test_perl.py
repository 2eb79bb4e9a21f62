"""Perl's POP3 clients: Net::POP3 (libnet, core Perl) and Mail::POP3Client.

Net::POP3 speaks every transport: implicit TLS with `SSL => 1` and STLS with `starttls()`,
both through IO::Socket::SSL (libio-socket-ssl-perl). `get` writes each line with "\\n".

Mail::POP3Client (libmail-pop3client-perl) has `USESSL` for implicit TLS but no STLS, so
there is no STLS test for it. Its USESSL connection takes no SSL options, so the test CA
is given to IO::Socket::SSL as a client default (set_client_defaults) before it connects.
HeadAndBodyToFile writes each line as it came, CRLF included, with the dot unstuffed.

Both scripts print "N SIZE" for each message as the server listed it. On their defaults
(the second pass), Net::POP3 logs in with `auth` (SASL through Authen::SASL, which picks
a mechanism it has from CAPA: PLAIN or LOGIN, as it has no SCRAM) and Mail::POP3Client
with its `AUTH_MODE` default, BEST (APOP if the greeting offers it, else CRAM-MD5 if CAPA
does, else USER/PASS).
"""

from __future__ import annotations

import subprocess

import pytest

from tests.clients.conftest import (
    TRANSPORTS,
    Target,
    assert_mailbox,
    expected_sizes,
    on_defaults,
    read_dir,
    through_haproxy,
)
from tests.clients.corpus import CORPUS
from tests.conftest import not_here, require_program

NET_POP3 = r"""
use strict;
use warnings;
use Net::POP3;

my ($host, $port, $transport, $ca, $user, $pass, $out, $delete, $defaults) = @ARGV;
my %ssl = $transport eq 'plain' ? () : (SSL_ca_file => $ca, SSL_verify_mode => 1);
my $pop = Net::POP3->new($host, Port => $port, Timeout => 20,
                         ($transport eq 'tls' ? (SSL => 1, %ssl) : ()))
    or die "connect: $@\n";
if ($transport eq 'stls') {
    $pop->starttls(%ssl) or die "starttls: " . ($IO::Socket::SSL::SSL_ERROR // '') . "\n";
}
if ($defaults) {  # SASL, the mechanism picked by Authen::SASL from the server's CAPA
    $pop->auth($user, $pass) or die "auth: " . $pop->message;
} else {
    defined($pop->login($user, $pass)) or die "login: " . $pop->message;
}
my $list = $pop->list or die "list: " . $pop->message;
for my $n (sort { $a <=> $b } keys %$list) {
    print "$n $list->{$n}\n";
    open(my $fh, '>:raw', "$out/$n") or die "$out/$n: $!\n";
    $pop->get($n, $fh) or die "get $n: " . $pop->message;
    close($fh) or die "$out/$n: $!\n";
    if ($delete) { $pop->delete($n) or die "delete $n: " . $pop->message; }
}
$pop->quit or die "quit: " . $pop->message;
"""

MAIL_POP3CLIENT = r"""
use strict;
use warnings;
use IO::Socket::SSL;
use Mail::POP3Client;

my ($host, $port, $transport, $ca, $user, $pass, $out, $delete, $defaults) = @ARGV;
die "Mail::POP3Client has no STLS\n" if $transport eq 'stls';
if ($transport eq 'tls') {
    IO::Socket::SSL::set_client_defaults(
        SSL_ca_file => $ca, SSL_verify_mode => SSL_VERIFY_PEER,
        SSL_verifycn_scheme => 'pop3', SSL_verifycn_name => $host);
}
my $pop = Mail::POP3Client->new(USER => $user, PASSWORD => $pass, HOST => $host,
                                PORT => $port, USESSL => ($transport eq 'tls' ? 1 : 0),
                                ($defaults ? () : (AUTH_MODE => 'PASS')), TIMEOUT => 20);
$pop->State eq 'TRANSACTION' or die "login: " . $pop->Message . "\n";
for my $line ($pop->List) {
    my ($n, $size) = split ' ', $line;
    print "$n $size\n";
    open(my $fh, '>:raw', "$out/$n") or die "$out/$n: $!\n";
    $pop->HeadAndBodyToFile($fh, $n) or die "RETR $n: " . $pop->Message . "\n";
    close($fh) or die "$out/$n: $!\n";
    if ($delete) { $pop->Delete($n) or die "DELE $n: " . $pop->Message . "\n"; }
}
$pop->Close or die "QUIT: " . $pop->Message . "\n";
"""


PERL_PACKAGES = {
    "Authen::SASL": "libauthen-sasl-perl",
    "IO::Socket::SSL": "libio-socket-ssl-perl",
    "Mail::POP3Client": "libmail-pop3client-perl",
}


def require_perl_module(module: str) -> None:
    """Like require_program, for a Perl module: skip if missing, fail under CI=true."""
    perl = require_program("perl")
    found = subprocess.run([perl, f"-M{module}", "-e", "1"], capture_output=True, timeout=10)
    if found.returncode != 0:
        not_here(f"Perl module {module} ({PERL_PACKAGES[module]}) is not installed")


def run_perl(target: Target, script: str, *, delete: bool) -> list[bytes]:
    if target.transport != "plain":
        require_perl_module("IO::Socket::SSL")
    out = target.workdir / "fetched"
    out.mkdir()
    ca = target.ca_file if target.transport != "plain" else ""
    argv = [require_program("perl"), "-e", script, "--", target.host, str(target.port)]
    argv += [target.transport, ca, target.user, target.password, str(out), str(int(delete))]
    argv += [str(int(target.default_auth))]
    listing = target.run(argv).stdout
    assert listing == "".join(f"{i} {s}\n" for i, s in enumerate(expected_sizes(), 1)).encode()
    got = read_dir(out)
    assert len(got) == len(CORPUS)
    return got


@pytest.mark.parametrize("target", TRANSPORTS, indirect=True)
@pytest.mark.parametrize("delete", [False, True], ids=["keep", "delete"])
def test_net_pop3(target: Target, delete: bool) -> None:
    got = run_perl(target, NET_POP3, delete=delete)
    assert_mailbox(got, f"Net::POP3 over {target.transport}")
    if delete:
        target.assert_emptied()
    else:
        target.assert_unchanged()


@pytest.mark.parametrize("target", ["plain", "tls"], indirect=True)
@pytest.mark.parametrize("delete", [False, True], ids=["keep", "delete"])
def test_mail_pop3client(target: Target, delete: bool) -> None:
    require_perl_module("Mail::POP3Client")
    got = run_perl(target, MAIL_POP3CLIENT, delete=delete)
    assert_mailbox(got, f"Mail::POP3Client over {target.transport}")
    if delete:
        target.assert_emptied()
    else:
        target.assert_unchanged()


@pytest.mark.parametrize("target", on_defaults(), indirect=True)
def test_net_pop3_on_its_defaults(target: Target) -> None:
    require_perl_module("Authen::SASL")
    got = run_perl(target, NET_POP3, delete=False)
    assert_mailbox(got, f"Net::POP3 (auth) over {target.transport}")
    target.assert_unchanged()
    assert {s.mechanism for s in target.assert_sessions()} <= {"PLAIN", "LOGIN"}


@pytest.mark.parametrize("target", on_defaults(("plain", "tls")), indirect=True)
def test_mail_pop3client_on_its_defaults(target: Target) -> None:
    require_perl_module("Mail::POP3Client")
    got = run_perl(target, MAIL_POP3CLIENT, delete=False)
    assert_mailbox(got, f"Mail::POP3Client (AUTH_MODE BEST) over {target.transport}")
    target.assert_unchanged()


@pytest.mark.parametrize("target", through_haproxy(), indirect=True)
def test_net_pop3_through_haproxy(target: Target) -> None:
    assert_mailbox(run_perl(target, NET_POP3, delete=False), "Net::POP3 through HAProxy")
    target.assert_unchanged()


@pytest.mark.parametrize("target", through_haproxy(("plain", "tls")), indirect=True)
def test_mail_pop3client_through_haproxy(target: Target) -> None:
    require_perl_module("Mail::POP3Client")
    assert_mailbox(run_perl(target, MAIL_POP3CLIENT, delete=False), "Mail::POP3Client, HAProxy")
    target.assert_unchanged()
