# A tiny Rack app for puma under overseer.
run lambda { |_env|
  body = "worker=#{ENV.fetch('OVERSEER_WORKER', '0')} pid=#{Process.pid}\n"
  [200, { "content-type" => "text/plain", "content-length" => body.bytesize.to_s }, [body]]
}
