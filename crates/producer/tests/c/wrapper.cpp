// wrapper.cpp: the C++ RAII wrapper as an MT5 plugin would use it, with MT5's wide
// strings. Built and run by crates/producer/tests/c_session.rs.
//
//   wrapper REDIS_URL SPOOL_DIR
#include "tradecast_producer.hpp"

#include <cstdio>
#include <cstring>
#include <utility>

int main(int argc, char **argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s REDIS_URL SPOOL_DIR\n", argv[0]);
        return 2;
    }
    tc_config cfg = {};
    cfg.redis_url = argv[1];
    cfg.source = "mt5-cpp";
    cfg.spool_dir = argv[2];

    // A bad config throws, with the library's reason.
    tc_config bad = cfg;
    bad.source = nullptr;
    try {
        tradecast::Producer p(bad);
        std::fprintf(stderr, "a config without source was accepted\n");
        return 1;
    } catch (const tradecast::Error &e) {
        if (std::strstr(e.what(), "source is required") == nullptr) {
            std::fprintf(stderr, "unexpected error: %s\n", e.what());
            return 1;
        }
    }

    tradecast::Producer producer(cfg);
    tradecast::Producer moved(std::move(producer));  // move-only handle

    tc_account a = {};
    a.login = 500200;
    tradecast::set(a.name, L"Zo\u00eb M\u00fcller \U0001F600");  // wide, non-ASCII
    tradecast::set(a.currency, "EUR");
    a.leverage = 100;
    a.balance = 2500.0;
    a.credit = 0.0;
    a.margin = tradecast::absent;
    a.margin_free = tradecast::absent;
    a.margin_level = tradecast::absent;
    a.equity = tradecast::absent;
    int rc = moved.publish(a);

    tc_tick t = {};
    tradecast::set(t.symbol, L"EURUSD");
    t.bid = 1.1;
    t.ask = 1.1002;
    rc |= moved.publish(t);

    // Truncation never splits a character: 5 bytes of room for "ééé" (6 bytes).
    char small[6];
    tradecast::set(small, "\xc3\xa9\xc3\xa9\xc3\xa9");
    if (std::strcmp(small, "\xc3\xa9\xc3\xa9") != 0) {
        std::fprintf(stderr, "bad truncation\n");
        return 1;
    }

    if (rc != TC_OK || !moved.flush(5000)) {
        std::fprintf(stderr, "publish/flush failed: %s\n", tradecast::last_error());
        return 1;
    }
    tc_stats s = moved.stats();
    moved.close();
    if (moved.publish(t) != TC_ERR_CLOSED) {
        std::fprintf(stderr, "publish after close did not fail\n");
        return 1;
    }
    std::printf("delivered=%llu\n", static_cast<unsigned long long>(s.delivered));
    return 0;
}
