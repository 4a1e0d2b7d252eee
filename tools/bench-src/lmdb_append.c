/* The C baseline of `tools/bench log`: a plain C program doing the same LMDB appends as
 * Snapback's log.
 *
 *   lmdb_append DIR EVENTS BATCH records   the same record bytes as Snapback: a 52-byte header,
 *                                          a 12-byte MapCopyProgressed payload, CRC-32C over
 *                                          header and payload, the SHA-256 chain (OpenSSL), and
 *                                          the head entry in `meta` once per commit
 *   lmdb_append DIR EVENTS BATCH raw       64-byte values with no checksum or hash at all
 *
 * Keys are 8-byte big-endian sequence numbers written with MDB_APPEND; BATCH records per synced
 * transaction. Prints events per second as JSON. */
#include <lmdb.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint32_t table[8][256];

static void crc_init(void) {
    for (int i = 0; i < 256; i++) {
        uint32_t c = (uint32_t)i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
        table[0][i] = c;
    }
    for (int i = 0; i < 256; i++)
        for (int s = 1; s < 8; s++) table[s][i] = (table[s - 1][i] >> 8) ^ table[0][table[s - 1][i] & 0xFF];
}

static uint32_t crc32c(uint32_t crc, const unsigned char *p, size_t n) {
    uint32_t v = ~crc;
    while (n >= 8) {
        uint32_t w = v ^ (uint32_t)(p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24);
        v = table[7][w & 0xFF] ^ table[6][(w >> 8) & 0xFF] ^ table[5][(w >> 16) & 0xFF] ^ table[4][w >> 24] ^
            table[3][p[4]] ^ table[2][p[5]] ^ table[1][p[6]] ^ table[0][p[7]];
        p += 8; n -= 8;
    }
    while (n--) v = (v >> 8) ^ table[0][(v ^ *p++) & 0xFF];
    return ~v;
}

static void check(int rc, const char *what) {
    if (rc != 0) { fprintf(stderr, "%s: %s\n", what, mdb_strerror(rc)); exit(1); }
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: lmdb_append DIR EVENTS BATCH records|raw\n"); return 2; }
    const char *dir = argv[1];
    long events = atol(argv[2]), batch = atol(argv[3]);
    int records = strcmp(argv[4], "records") == 0;
    crc_init();
    MDB_env *env; MDB_txn *txn; MDB_dbi dbi, meta;
    check(mdb_env_create(&env), "mdb_env_create");
    check(mdb_env_set_maxdbs(env, 16), "mdb_env_set_maxdbs");
    check(mdb_env_set_mapsize(env, (size_t)16 << 30), "mdb_env_set_mapsize");
    check(mdb_env_open(env, dir, MDB_NOTLS, 0600), "mdb_env_open");
    check(mdb_txn_begin(env, NULL, 0, &txn), "mdb_txn_begin");
    check(mdb_dbi_open(txn, "events", MDB_CREATE, &dbi), "mdb_dbi_open");
    check(mdb_dbi_open(txn, "meta", MDB_CREATE, &meta), "mdb_dbi_open");
    check(mdb_txn_commit(txn), "mdb_txn_commit");
    /* buffer = key (8) + value (64): hashed as one contiguous run, as Snapback hashes key||value */
    unsigned char buffer[8 + 64], hash[32] = {0}, head[40];
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    uint64_t seq = 0;
    for (long done = 0; done < events;) {
        check(mdb_txn_begin(env, NULL, 0, &txn), "mdb_txn_begin");
        for (long i = 0; i < batch && done < events; i++, done++) {
            seq++;
            unsigned char *key = buffer, *value = buffer + 8;
            for (int b = 0; b < 8; b++) key[b] = (unsigned char)(seq >> (56 - 8 * b));
            memset(value, 0, 64);
            if (records) {
                int64_t timestamp = (int64_t)time(NULL) * 1000;
                uint16_t type = 11; uint32_t payload_bytes = 12, map = 0; uint64_t grains = seq;
                value[0] = 1; value[1] = 0;
                memcpy(value + 2, &type, 2); memcpy(value + 4, &timestamp, 8); memcpy(value + 12, &payload_bytes, 4);
                memcpy(value + 16, hash, 32);
                memcpy(value + 52, &map, 4); memcpy(value + 56, &grains, 8);
                uint32_t crc = crc32c(crc32c(0, value, 48), value + 52, 12);
                memcpy(value + 48, &crc, 4);
            } else {
                memcpy(value, &seq, sizeof seq);
            }
            MDB_val k = {8, key}, v = {64, value};
            check(mdb_put(txn, dbi, &k, &v, MDB_APPEND), "mdb_put");
            if (records) SHA256(buffer, sizeof buffer, hash);
        }
        if (records) {
            for (int b = 0; b < 8; b++) head[b] = (unsigned char)(seq >> (56 - 8 * b));
            memcpy(head + 8, hash, 32);
            MDB_val k = {4, "head"}, v = {40, head};
            check(mdb_put(txn, meta, &k, &v, 0), "mdb_put head");
        }
        check(mdb_txn_commit(txn), "mdb_txn_commit");
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    double seconds = (end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) / 1e9;
    printf("{\"events\": %ld, \"seconds\": %f, \"eventsPerSecond\": %f}\n", events, seconds, events / seconds);
    mdb_env_close(env);
    return 0;
}
