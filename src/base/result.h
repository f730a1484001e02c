#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace trellis {

// What kind of failure an Error is; callers branch on the code, people read the message.
enum class ErrorCode {
  kInvalidArgument, // bad input from outside: flags, config, requests
  kNotFound,
  kAlreadyExists,
  kFailedPrecondition, // e.g. a compare-and-swap index that no longer matches
  kResourceExhausted,  // a documented limit was exceeded
  kUnavailable,        // a peer or resource is unreachable right now
  kDeadlineExceeded,
  kIo,
  kInternal,
};

const char* errorCodeName(ErrorCode code);

// An error with a message a person can act on ("proxy.yaml:12: clusters[0].lb: unknown policy").
class Error {
public:
  Error(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // Returns a copy with `context` prepended: "context: message".
  Error withContext(std::string_view context) const {
    return Error(code_, fmt::format("{}: {}", context, message_));
  }

private:
  ErrorCode code_;
  std::string message_;
};

template <typename... Args>
Error makeError(ErrorCode code, fmt::format_string<Args...> f, Args&&... args) {
  return Error(code, fmt::format(f, std::forward<Args>(args)...));
}

// A value or an Error. Used wherever a function can fail on the data plane, where exceptions
// are not used. Accessing value() of an error (or error() of a value) is a programming error.
template <typename T> class [[nodiscard]] Result {
public:
  Result(T value) : v_(std::move(value)) {}
  Result(Error error) : v_(std::move(error)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

  const Error& error() const {
    assert(!ok());
    return std::get<1>(v_);
  }

  T valueOr(T fallback) const { return ok() ? std::get<0>(v_) : std::move(fallback); }

private:
  std::variant<T, Error> v_;
};

// Result<void>: success or an Error.
template <> class [[nodiscard]] Result<void> {
public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const {
    assert(!ok_);
    return error_;
  }

private:
  Error error_{ErrorCode::kInternal, ""};
  bool ok_ = true;
};

using Status = Result<void>;

inline Status okStatus() { return Status(); }

} // namespace trellis

// Propagates an error from an expression yielding a Result/Status.
#define TRELLIS_RETURN_IF_ERROR(expr)                                                          \
  do {                                                                                         \
    auto _st = (expr);                                                                         \
    if (!_st.ok())                                                                             \
      return _st.error();                                                                      \
  } while (0)
