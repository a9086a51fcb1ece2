// tradecast_producer.hpp: a small C++ wrapper over tradecast_producer.h (C++11).
//
//   tradecast::Producer producer(config);        // throws tradecast::Error
//   tc_deal d = {};                               // zero = valid empty record
//   d.deal = deal->Deal(); ...
//   tradecast::set(d.symbol, deal->Symbol());     // MT5's wchar_t strings -> UTF-8
//   int rc = producer.publish(d);                 // never blocks, never throws
//
// The producer closes (delivering or spooling what is queued) when destroyed.
// Guide: docs/plugin.md.
#ifndef TRADECAST_PRODUCER_HPP
#define TRADECAST_PRODUCER_HPP

#include "tradecast_producer.h"

#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace tradecast {

// An optional double left out of the event.
static const double absent = std::numeric_limits<double>::quiet_NaN();

// A failed tc_producer_open, with tc_last_error()'s text.
class Error : public std::runtime_error {
public:
    explicit Error(const std::string &what) : std::runtime_error(what) {}
};

namespace detail {
// Append the UTF-8 encoding of `cp` if it fits in dst[*len .. n-1); false if not.
inline bool put_utf8(char *dst, std::size_t n, std::size_t *len, std::uint32_t cp) {
    char buf[4];
    std::size_t k;
    if (cp < 0x80) {
        buf[0] = static_cast<char>(cp);
        k = 1;
    } else if (cp < 0x800) {
        buf[0] = static_cast<char>(0xC0 | (cp >> 6));
        buf[1] = static_cast<char>(0x80 | (cp & 0x3F));
        k = 2;
    } else if (cp < 0x10000) {
        buf[0] = static_cast<char>(0xE0 | (cp >> 12));
        buf[1] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        buf[2] = static_cast<char>(0x80 | (cp & 0x3F));
        k = 3;
    } else {
        buf[0] = static_cast<char>(0xF0 | (cp >> 18));
        buf[1] = static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        buf[2] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        buf[3] = static_cast<char>(0x80 | (cp & 0x3F));
        k = 4;
    }
    if (*len + k > n - 1) return false;
    for (std::size_t i = 0; i < k; i++) dst[(*len)++] = buf[i];
    return true;
}
}  // namespace detail

// Copy UTF-8 text into a fixed char field: truncated at a character boundary if
// too long, always NUL-terminated. NULL gives "".
template <std::size_t N>
inline void set(char (&dst)[N], const char *src) {
    std::size_t len = 0;
    if (src != nullptr) {
        while (src[len] != '\0' && len < N - 1) len++;
        // Do not cut a multi-byte character in half.
        if (src[len] != '\0') {
            while (len > 0 && (static_cast<unsigned char>(src[len]) & 0xC0) == 0x80) len--;
        }
        for (std::size_t i = 0; i < len; i++) dst[i] = src[i];
    }
    for (std::size_t i = len; i < N; i++) dst[i] = '\0';
}

template <std::size_t N>
inline void set(char (&dst)[N], const std::string &src) {
    set(dst, src.c_str());
}

// Copy a wide string (MT5's LPCWSTR: UTF-16 on Windows, UTF-32 elsewhere) into a
// fixed char field as UTF-8, truncated at a character boundary.
template <std::size_t N>
inline void set(char (&dst)[N], const wchar_t *src) {
    std::size_t len = 0;
    if (src != nullptr) {
        for (std::size_t i = 0; src[i] != 0; i++) {
            std::uint32_t cp = static_cast<std::uint32_t>(src[i]);
            if (sizeof(wchar_t) == 2 && cp >= 0xD800 && cp < 0xDC00 && src[i + 1] >= 0xDC00 &&
                src[i + 1] < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (static_cast<std::uint32_t>(src[i + 1]) - 0xDC00);
                i++;
            } else if (cp >= 0xD800 && cp < 0xE000) {
                cp = 0xFFFD;  // a lone surrogate
            }
            if (!detail::put_utf8(dst, N, &len, cp)) break;
        }
    }
    for (std::size_t i = len; i < N; i++) dst[i] = '\0';
}

// An open producer; closes on destruction. Move-only. Every publish returns the C
// code (TC_OK, TC_ERR_FULL, TC_ERR_INVALID, TC_ERR_CLOSED) and never throws or
// blocks, so it is safe inside trade-server callbacks.
class Producer {
public:
    explicit Producer(const tc_config &config) : p_(tc_producer_open(&config)) {
        if (p_ == nullptr) throw Error(std::string("tc_producer_open: ") + tc_last_error());
    }
    ~Producer() { close(); }

    Producer(const Producer &) = delete;
    Producer &operator=(const Producer &) = delete;
    Producer(Producer &&other) noexcept : p_(other.p_) { other.p_ = nullptr; }
    Producer &operator=(Producer &&other) noexcept {
        if (this != &other) {
            close();
            p_ = other.p_;
            other.p_ = nullptr;
        }
        return *this;
    }

    int publish(const tc_deal &r) noexcept { return p_ ? tc_publish_deal(p_, &r) : TC_ERR_CLOSED; }
    int publish(const tc_position &r) noexcept { return p_ ? tc_publish_position(p_, &r) : TC_ERR_CLOSED; }
    int publish(const tc_order &r) noexcept { return p_ ? tc_publish_order(p_, &r) : TC_ERR_CLOSED; }
    int publish(const tc_account &r) noexcept { return p_ ? tc_publish_account(p_, &r) : TC_ERR_CLOSED; }
    int publish(const tc_tick &r) noexcept { return p_ ? tc_publish_tick(p_, &r) : TC_ERR_CLOSED; }
    int publish(const tc_ib_link &r) noexcept { return p_ ? tc_publish_ib_link(p_, &r) : TC_ERR_CLOSED; }
    int publish(const tc_symbol &r) noexcept { return p_ ? tc_publish_symbol(p_, &r) : TC_ERR_CLOSED; }
    int publish_margin_call(const tc_risk &r) noexcept { return p_ ? tc_publish_margin_call(p_, &r) : TC_ERR_CLOSED; }
    int publish_stop_out(const tc_risk &r) noexcept { return p_ ? tc_publish_stop_out(p_, &r) : TC_ERR_CLOSED; }

    // Wait until everything published so far is in Redis. Blocks: not for callbacks.
    bool flush(std::uint32_t timeout_ms) noexcept { return tc_producer_flush(p_, timeout_ms) == TC_OK; }

    tc_stats stats() const noexcept {
        tc_stats s = {};
        tc_producer_stats(p_, &s);
        return s;
    }

    // Close now (the destructor does it otherwise). Publishing afterwards returns
    // TC_ERR_CLOSED.
    void close() noexcept {
        if (p_ != nullptr) {
            tc_producer_close(p_);
            p_ = nullptr;
        }
    }

    tc_producer *get() const noexcept { return p_; }

private:
    tc_producer *p_;
};

// The message of this thread's last failed call.
inline const char *last_error() noexcept { return tc_last_error(); }

}  // namespace tradecast

#endif  // TRADECAST_PRODUCER_HPP
