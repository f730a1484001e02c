#include "base/result.h"

namespace trellis {

const char* errorCodeName(ErrorCode code) {
  switch (code) {
  case ErrorCode::kInvalidArgument:
    return "invalid_argument";
  case ErrorCode::kNotFound:
    return "not_found";
  case ErrorCode::kAlreadyExists:
    return "already_exists";
  case ErrorCode::kFailedPrecondition:
    return "failed_precondition";
  case ErrorCode::kResourceExhausted:
    return "resource_exhausted";
  case ErrorCode::kUnavailable:
    return "unavailable";
  case ErrorCode::kDeadlineExceeded:
    return "deadline_exceeded";
  case ErrorCode::kIo:
    return "io";
  case ErrorCode::kInternal:
    return "internal";
  }
  return "unknown";
}

} // namespace trellis
