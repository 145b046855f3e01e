/*
 * logshim.c - LD_PRELOAD library that sends syslog(3) output to a file.
 *
 * Cyrus logs only through syslog(3), and a test machine (or CI container)
 * usually has no syslog daemon and no /dev/log.  cyrus-instance.sh compiles
 * this file into DIR/lib/logshim.so and preloads it into the Cyrus master
 * (every child inherits it), sync_client and the tools; each log call then
 * appends one line to the file named by $CYRUS_TEST_LOG:
 *
 *   2026-11-21T23:59:59.123456 imapd[1234] <info> login: ... User logged in
 *
 * Every write opens the file with O_APPEND and closes it again, so it keeps
 * working after the process switched from root to the cyrus user (the file
 * is created beforehand and owned by that user) and lines of concurrent
 * processes do not tear (one write(2) per line).
 *
 * Debian builds Cyrus with _FORTIFY_SOURCE, so the calls arrive as
 * __syslog_chk; the plain entry points are covered too.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static const char *shim_ident = "?";
static int shim_opts;
static int shim_mask = 0xff; /* all priorities, like glibc's default */

void openlog(const char *ident, int option, int facility)
{
    (void)facility;
    if (ident)
        shim_ident = ident; /* glibc keeps the pointer too */
    shim_opts = option;
}

void closelog(void) {}

int setlogmask(int mask)
{
    int old = shim_mask;
    if (mask != 0)
        shim_mask = mask;
    return old;
}

static const char *level_name(int pri)
{
    static const char *const names[] = {"emerg", "alert", "crit", "err",
                                        "warning", "notice", "info", "debug"};
    return names[LOG_PRI(pri)];
}

/* Expand %m (strerror of the errno at entry) the way syslog(3) does. */
static void expand_m(char *out, size_t outlen, const char *fmt, int saved_errno)
{
    const char *err = strerror(saved_errno);
    size_t o = 0;
    for (const char *p = fmt; *p && o + 1 < outlen; p++) {
        if (p[0] == '%' && p[1] == '%') {
            if (o + 2 >= outlen) break;
            out[o++] = '%';
            out[o++] = '%';
            p++;
        } else if (p[0] == '%' && p[1] == 'm') {
            for (const char *e = err; *e && o + 2 < outlen; e++) {
                if (*e == '%') out[o++] = '%';
                out[o++] = *e;
            }
            p++;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

void vsyslog(int pri, const char *fmt, va_list ap)
{
    int saved_errno = errno;
    if (!(LOG_MASK(LOG_PRI(pri)) & shim_mask))
        return;

    char fmtbuf[2048], msg[8192], line[8448];
    struct timeval tv;
    struct tm tm;

    expand_m(fmtbuf, sizeof fmtbuf, fmt ? fmt : "", saved_errno);
    vsnprintf(msg, sizeof msg, fmtbuf, ap);
    size_t mlen = strlen(msg);
    while (mlen && msg[mlen - 1] == '\n')
        msg[--mlen] = '\0';

    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line,
                     "%04d-%02d-%02dT%02d:%02d:%02d.%06ld %s[%d] <%s> %s\n",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, (long)tv.tv_usec, shim_ident,
                     (int)getpid(), level_name(pri), msg);
    if (n < 0)
        goto out;
    if ((size_t)n >= sizeof line) {
        n = sizeof line - 1;
        line[n - 1] = '\n';
    }

    const char *path = getenv("CYRUS_TEST_LOG");
    if (path && *path) {
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) {
            ssize_t w = write(fd, line, (size_t)n);
            (void)w;
            close(fd);
        }
    }
    if (shim_opts & LOG_PERROR) {
        ssize_t w = write(2, line, (size_t)n);
        (void)w;
    }
out:
    errno = saved_errno;
}

void syslog(int pri, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsyslog(pri, fmt, ap);
    va_end(ap);
}

void __vsyslog_chk(int pri, int flag, const char *fmt, va_list ap)
{
    (void)flag;
    vsyslog(pri, fmt, ap);
}

void __syslog_chk(int pri, int flag, const char *fmt, ...)
{
    va_list ap;
    (void)flag;
    va_start(ap, fmt);
    vsyslog(pri, fmt, ap);
    va_end(ap);
}
