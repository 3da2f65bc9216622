# lupine_warnings(tgt): our warning set, on our targets only (never CMAKE_CXX_FLAGS).
function(lupine_warnings tgt)
  target_compile_options(${tgt} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wconversion
    -Wold-style-cast -Wnon-virtual-dtor
    # GCC 12 false positive on Asio's awaitable frame operator delete (coroutine frames).
    -Wno-mismatched-new-delete)
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    # Clang's -Wconversion also turns on -Wsign-conversion, which GCC's (C++) does not: keep
    # one warning set on both compilers (clang builds the fuzz targets, fuzz/).
    target_compile_options(${tgt} PRIVATE -Wno-sign-conversion)
  endif()
  if(LUPINE_WERROR)
    target_compile_options(${tgt} PRIVATE -Werror)
  endif()
endfunction()

# lupine_sanitize(tgt): the same -fsanitize= on compile and link.
function(lupine_sanitize tgt)
  if(LUPINE_SANITIZE)
    # GCC 12's -Wmaybe-uninitialized misfires inside libstdc++ (std::regex) once the
    # sanitizers instrument it; the sanitizers themselves catch real uninitialized use.
    target_compile_options(${tgt} PRIVATE -fsanitize=${LUPINE_SANITIZE} -fno-omit-frame-pointer)
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      target_compile_options(${tgt} PRIVATE -Wno-maybe-uninitialized)
    endif()
    target_link_options(${tgt} PRIVATE -fsanitize=${LUPINE_SANITIZE})
  endif()
endfunction()

function(lupine_target tgt)
  lupine_warnings(${tgt})
  lupine_sanitize(${tgt})
endfunction()
