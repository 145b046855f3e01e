#!/usr/bin/env bash
# Seeds fuzz/corpus/decoder/ from the real Cyrus 3.6 transcripts
# (crates/protocol/tests/fixtures/cyrus-3.6, format in its README.txt) plus the
# hostile inputs of spec §9.7. The corpus directory is not committed (.gitignore);
# run this once before the first `cargo fuzz run decoder`.
#
# Each seed is one fuzz input: byte 0 = where the target cuts the rest in two
# (0x80: the middle), byte 1 = decoder mode (0 Commands, 1 Responses, 2 Text), then
# the bytes. Seeds: every protocol line of every transcript on its own (client lines
# as Commands, greeting lines as Text, other server lines as Responses), each whole
# client stream and each server stream after its greeting.
#
# Usage: fuzz/seed-corpus.sh [FIXTURE_DIR]     (needs perl)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
fixtures=${1:-$here/../crates/protocol/tests/fixtures/cyrus-3.6}
out=$here/corpus/decoder
mkdir -p "$out"

perl - "$fixtures" "$out" <<'PERL'
use strict;
use warnings;

my ($dir, $out) = @ARGV;
my $written = 0;

sub seed {
    my ($name, $mode, $bytes) = @_;
    return if $bytes eq '';
    my $path = sprintf("%s/%04d-%s", $out, $written++, $name);
    open(my $fh, '>:raw', $path) or die "$path: $!";
    print $fh chr(0x80) . chr($mode) . $bytes;
    close($fh);
}

# README.txt escapes: \\ \r \n \xNN; a final "\<no CRLF before close>" means no CRLF.
sub unescape {
    my ($s) = @_;
    my $crlf = ($s =~ s/\\<no CRLF before close>\z//) ? 1 : 0;
    $crlf = !$crlf;
    $s =~ s{\\(\\|r|n|x([0-9A-Fa-f]{2}))}{
        $1 eq '\\' ? '\\' : $1 eq 'r' ? "\r" : $1 eq 'n' ? "\n" : chr(hex($2))
    }ge;
    return ($s, $crlf);
}

for my $file (sort glob("$dir/*.txt")) {
    next if $file =~ m{/README\.txt\z};
    (my $base = $file) =~ s{.*/}{};
    $base =~ s/\.txt\z//;
    open(my $fh, '<:raw', $file) or die "$file: $!";
    chomp(my @lines = <$fh>);
    close($fh);
    my $explicit_crlf = $lines[0] =~ /CRLF shown as \\r\\n/;
    my @proto = grep { /^[CS]: / } @lines;
    my $stamped = @proto && !grep { !/^[CS]: \[\d+\.\d+\] / } @proto;

    my (%stream, %line, %rest, $greeted, $seen);
    my $session = 0;
    my $start = sub {
        %stream = (C => '', S => '');
        %line = (C => '', S => '');
        %rest = (C => 0, S => 0);
        $greeted = 0;
        $seen = 0;
        $session++;
    };
    my $finish = sub {
        seed("$base-$session-client", 0, $stream{C});
        seed("$base-$session-server", 1, $stream{S});
    };
    $start->();
    for (@lines) {
        # Each relayed session, and each banner of 00-banners.txt, is a connection.
        if (/^# relay: session \d+ opened/ || /^# (?:csync|imap|lmtp) \(/) {
            if ($seen) {
                $finish->();
                $start->();
            }
            next;
        }
        next if /^#/ || $_ eq '';
        $seen = 1;
        my ($d, $body) = /^([CS]): (.*)\z/s or die "$file: not a C:/S: line: $_";
        $body =~ s/^\[\d+\.\d+\] // if $stamped;
        my ($bytes, $crlf) = unescape($body);
        $bytes .= "\r\n" if $crlf && !$explicit_crlf;
        # The server stream seed starts after the greeting (read as Text).
        $stream{$d} .= $bytes if $d eq 'C' || $greeted;
        $line{$d} .= $bytes;
        # Literal payload announced by an earlier line?
        my $after = $bytes;
        if ($rest{$d} > 0) {
            my $take = $rest{$d} < length($after) ? $rest{$d} : length($after);
            $rest{$d} -= $take;
            $after = substr($after, $take);
            # A payload that ends with this file line does not end the protocol line.
            next if $rest{$d} > 0 || $after eq '';
        }
        if ($after =~ /(?:\{(\d+)\+?\}|%\{[^\r\n]* (\d+)\})\r\n\z/) {
            $rest{$d} = defined $1 ? $1 : $2;
            next if $rest{$d} > 0;
        }
        next unless $line{$d} =~ /\n\z/;
        my $mode = $d eq 'C' ? 0 : $greeted ? 1 : 2;
        seed("$base-$session-" . lc($d) . "line", $mode, $line{$d});
        $greeted = 1 if $d eq 'S' && $line{$d} =~ /^\* OK /i;
        $line{$d} = '';
    }
    $finish->();
}

# Spec §9.7 and §2.4/§2.5 edge cases.
my @hostile = (
    [0, "GET USER john \r\nNOOP\r\n"],
    [0, "\r\nFOO bar\r\nSTARTTLS\r\n*\r\n"],
    [0, "APPLY SIEVE %(CONTENT {200000+}\r\n"],
    [0, "GET USER {4}\r\njohn\r\nGET USER {4+}\r\njohn\r\n"],
    [0, "APPLY X {4294967296+}\r\n"],
    [0, "APPLY MESSAGE (%{nosuchpart 0123456789abcdef0123456789abcdef01234567 4}\r\nNOOP)\r\n"],
    [0, "APPLY MESSAGE (%{badpart g 4}\r\nNOOP %{default g 4}\r\nFULL)\r\nEXIT\r\n"],
    [0, "APPLY MESSAGE (%{{3+}\r\na\"b {1+}\r\ng 0}\r\n %{\"a b\" \"\" 0}\n)\r\n"],
    [0, "APPLY X %(A) {6+}\r\nNOOP\r\n %{p g 6}\r\nEXIT\r\n\r\nRESTART\r\n"],
    [0, "APPLY X (a\r\nNOOP\r\n)\r\nAPPLY X ((((((((((((((((((((((((((((((((((x))))))))))))))))))))))))))))))))))\r\n"],
    [0, "APPLY X (NIL \"NIL\" nil \"\" {0+}\r\n \\Seen a{b%c*d\\e] \"a\\\"b\")\r\n"],
    [1, "* MISSING (a b)\r\nOK success\r\nNO IMAP_SYNC_CHANGED Changed (x\r\n+ \r\n* X {1}\r\na\r\n* Fatal error: [TOOBIG] Literal size exceeds fixed limit\r\nOK\r\n"],
    [2, "* SASL PLAIN LOGIN\r\n* OK host Cyrus sync server 3.6.1\r\n"],
);
my $i = 0;
seed("hostile-" . $i++, $_->[0], $_->[1]) for @hostile;
print "wrote $written seeds to $out\n";
PERL
