-- The external anchor of docs/benchmarks.md: GHC's `stm` on the workloads of
-- benches/transfer.rs (and `read_1`/`increment_1` of benches/core.rs), with the same operation
-- streams: the xorshift* generator of benches/common/mod.rs, thread k seeded as the k-th
-- `Rng::new()`, and the transfer of benches/common/bank.rs.
--
--   ghc -O2 -threaded -rtsopts benches/ghc/Bank.hs -outputdir target/ghc -o target/ghc/bank
--   target/ghc/bank +RTS -N2
--
-- Prints one line per workload: its name and the wall nanoseconds per operation, all threads
-- together (medians of 5 rounds), the unit the Rust benches report.
import Control.Concurrent
import Control.Concurrent.STM
import Control.Monad
import Data.Array
import Data.Bits
import Data.IORef
import Data.List (sort)
import Data.Word
import GHC.Clock (getMonotonicTimeNSec)

accounts :: Int
accounts = 1024

-- `Rng::next`: the state steps by xorshift, the output is the state times a constant.
step :: Word64 -> (Word64, Word64)
step x0 = (x3, x3 * 0x2545F4914F6CDD1D)
  where
    x1 = x0 `xor` (x0 `shiftR` 12)
    x2 = x1 `xor` (x1 `shiftL` 25)
    x3 = x2 `xor` (x2 `shiftR` 27)

-- The seed of thread t: the (t+1)-th `Rng::new()`.
seed :: Int -> Word64
seed t = (0x9E3779B97F4A7C15 * fromIntegral (t + 1)) .|. 1

transfers :: Array Int (TVar Int) -> Int -> Word64 -> IO ()
transfers accs n s0 = go n s0
  where
    n1 = fromIntegral accounts :: Word64
    go 0 _ = return ()
    go k s = do
      let (s', r) = step s
          from = fromIntegral ((r `shiftR` 8) `mod` n1)
          to = (from + 1 + fromIntegral ((r `shiftR` 24) `mod` (n1 - 1))) `mod` accounts
          amount = 1 + fromIntegral ((r `shiftR` 40) `mod` 100)
      atomically $ do
        x <- readTVar (accs ! from)
        writeTVar (accs ! from) $! x - amount
        y <- readTVar (accs ! to)
        writeTVar (accs ! to) $! y + amount
      go (k - 1) s'

-- Wall nanoseconds per operation of `threads` threads running `ops` operations in total.
timed :: Int -> Int -> (Int -> Int -> IO ()) -> IO Double
timed threads ops work = do
  dones <- forM [0 .. threads - 1] $ \t -> do
    done <- newEmptyMVar
    return (t, done)
  start <- getMonotonicTimeNSec
  forM_ dones $ \(t, done) -> forkIO (work t (ops `div` threads) >> putMVar done ())
  forM_ dones $ \(_, done) -> takeMVar done
  end <- getMonotonicTimeNSec
  return (fromIntegral (end - start) / fromIntegral ops)

median :: [Double] -> Double
median xs = sort xs !! (length xs `div` 2)

report :: String -> IO Double -> IO ()
report name run = do
  rounds <- replicateM 5 run
  putStrLn (name ++ " " ++ show (fromIntegral (round (median rounds * 10)) / 10 :: Double))

main :: IO ()
main = do
  one <- newTVarIO (0 :: Int)
  sink <- newIORef (0 :: Int)
  let reads n = replicateM_ n (atomically (readTVar one) >>= \v -> v `seq` return ())
      incs n = replicateM_ n (atomically (modifyTVar' one (+ 1)))
  report "read_1" (timed 1 2000000 (\_ n -> reads n))
  report "increment_1" (timed 1 2000000 (\_ n -> incs n))
  forM_ [1, 2, 8] $ \threads -> do
    accs <- listArray (0, accounts - 1) <$> replicateM accounts (newTVarIO 1000)
    report ("transfer_threads_" ++ show threads) (timed threads 2000000 (\t n -> transfers accs n (seed t)))
    total <- atomically (sum <$> mapM readTVar (elems accs))
    when (total /= accounts * 1000) $ error ("money was created or lost: " ++ show total)
  readIORef sink >>= \s -> s `seq` return ()
