/* RocksDB's one assertion that an I/O error reaches, made an exit 1 with a message.
 *
 * Debian's RocksDB 7.8 is built with assertions. A write or sync that fails inside one of
 * its files goes back to Cairn as a status (a clean error: tests/integration/faults.slow.sh
 * fails every such call of index/), except in its info LOG: that writer ignores a failed
 * write, and its next line trips WritableFileWriter::AssertFalseAndGetStatusForPrevError,
 * which aborts (exit 134, no word of what happened). RocksDB writes header lines to its LOG
 * at every open whatever the log level, and its C API cannot replace or disable the logger
 * (a log folder that cannot hold the file fails the open). So an EIO, or a full disk
 * store/space.c did not foresee, under index/LOG killed any command.
 *
 * The executable's __assert_fail comes before libc's for every shared library (the dynamic
 * linker's symbol order), so RocksDB's assertions land here. That one (its file is RocksDB's
 * WritableFileWriter) stops the process as a kill would at that point, which the crash
 * points prove the store survives, and says so; the LOG is a diagnostic text, nothing of the
 * store. Every other assertion aborts as before. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void __assert_fail(const char *assertion, const char *file, unsigned int line, const char *function)
    __attribute__((noreturn));

void __assert_fail(const char *assertion, const char *file, unsigned int line, const char *function)
{
    if (function && strstr(function, "WritableFileWriter::AssertFalseAndGetStatusForPrevError")) {
        static const char msg[] =
            "cairn: stopped: a write to the index's RocksDB files failed (a failing or full disk; "
            "RocksDB cannot go on after an error in its LOG). Nothing more was acknowledged, and what "
            "was is intact; fix the disk or free space, then run the command again (cairn fsck "
            "checks the store).\n";
        if (write(2, msg, sizeof msg - 1) < 0) { /* nothing left to tell it to */ }
        _exit(1);
    }
    fprintf(stderr, "%s:%u: %s: Assertion `%s' failed.\n", file ? file : "?", line,
            function ? function : "?", assertion ? assertion : "?");
    abort();
}
